import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import WarrenServer

/// What the TLS listener uses: the server's certificate chain and key, the CAs client certificates are checked
/// against, how strictly, the oldest version accepted, and where EXTERNAL finds a user name.
public struct TLSOptions: Sendable, Equatable {
  /// Client certificates: none asked for, checked when presented, or required (RabbitMQ's `verify_peer` with
  /// `fail_if_no_peer_cert`).
  public enum Verification: String, Sendable {
    case none, peer, require
  }

  /// Where EXTERNAL takes the user name from (RabbitMQ's `ssl_cert_login_from`).
  public enum LoginSource: String, Sendable {
    case commonName = "common_name"
    case subjectAlternativeName = "subject_alternative_name"
  }

  public var certificateFile: String
  public var keyFile: String
  /// The key's password, when it is encrypted.
  public var keyPassword: String?
  /// CA certificates (PEM); empty for none.
  public var caFile: String
  public var verification: Verification
  /// `1.2` or `1.3`.
  public var minimumVersion: String
  public var loginFrom: LoginSource

  public init(
    certificateFile: String, keyFile: String, keyPassword: String? = nil, caFile: String = "",
    verification: Verification = .none, minimumVersion: String = "1.2", loginFrom: LoginSource = .commonName
  ) {
    self.certificateFile = certificateFile
    self.keyFile = keyFile
    self.keyPassword = keyPassword
    self.caFile = caFile
    self.verification = verification
    self.minimumVersion = minimumVersion
    self.loginFrom = loginFrom
  }
}

/// Why a TLS context cannot be made: which file (by the setting that names it) and what is wrong with it.
public struct TLSProblem: Error, CustomStringConvertible, Equatable {
  /// The setting naming the file: `tls_cert`, `tls_key` or `tls_ca`.
  public var setting: String
  public var file: String
  public var message: String

  public var description: String {
    self.file.isEmpty ? "\(self.setting): \(self.message)" : "\(self.setting) \(self.file): \(self.message)"
  }
}

/// The server's TLS context, made from its files and made again on ``reload()`` (SIGHUP): handshakes after a
/// reload use the new certificate; connections already open keep theirs.
public final class TLSContextSource: Sendable {
  public let options: TLSOptions
  private let current: NIOLockedValueBox<NIOSSLContext>
  private let logger: Logger

  /// Loads the files; a problem names the file and the setting.
  public init(options: TLSOptions, logger: Logger) throws(TLSProblem) {
    self.options = options
    self.logger = logger
    self.current = NIOLockedValueBox(try Self.makeContext(options))
  }

  /// Reads the files again; on a problem the old context stays in use (and the problem is thrown).
  public func reload() throws(TLSProblem) {
    let context = try Self.makeContext(self.options)
    self.current.withLockedValue { $0 = context }
  }

  /// The context new connections handshake with.
  public var context: NIOSSLContext { self.current.withLockedValue { $0 } }

  /// Checks the files as the broker would load them (for `check-config`): every problem, by setting.
  public static func check(_ options: TLSOptions) -> TLSProblem? {
    do throws(TLSProblem) {
      _ = try self.makeContext(options)
      return nil
    } catch {
      return error
    }
  }

  /// Puts TLS in front of an AMQP connection: the TLS handler and the handler that tells the AMQP handler the
  /// version and the certificate's user once the handshake is done.
  public func prepareAMQP(_ channel: any Channel) throws {
    let handlers: [any ChannelHandler] = [
      NIOSSLServerHandler(context: self.context),
      TLSHandshakeObserver(
        verification: self.options.verification, loginFrom: self.options.loginFrom, logger: self.logger),
    ]
    try channel.pipeline.syncOperations.addHandlers(handlers)
  }

  /// Puts TLS in front of an HTTP connection.
  public func prepareHTTP(_ channel: any Channel) throws {
    let handlers: [any ChannelHandler] = [
      NIOSSLServerHandler(context: self.context),
      TLSHandshakeObserver(verification: .none, loginFrom: self.options.loginFrom, logger: self.logger),
    ]
    try channel.pipeline.syncOperations.addHandlers(handlers)
  }

  static func makeContext(_ options: TLSOptions) throws(TLSProblem) -> NIOSSLContext {
    let chain = try Self.certificates(options.certificateFile, setting: "tls_cert", "certificate")
    let key: NIOSSLPrivateKey
    do {
      if let password = options.keyPassword {
        key = try NIOSSLPrivateKey(file: options.keyFile, format: .pem) { setter in setter(Array(password.utf8)) }
      } else {
        key = try NIOSSLPrivateKey(file: options.keyFile, format: .pem)
      }
    } catch {
      throw TLSProblem(
        setting: "tls_key", file: options.keyFile,
        message: Self.explain(error, "private key")
          + (options.keyPassword == nil ? " (if it is encrypted, set WARREN_TLS_KEY_PASSWORD)" : ""))
    }
    var configuration = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    configuration.minimumTLSVersion = options.minimumVersion == "1.3" ? .tlsv13 : .tlsv12
    configuration.renegotiationSupport = .none
    if !options.caFile.isEmpty {
      configuration.trustRoots = .certificates(
        try Self.certificates(options.caFile, setting: "tls_ca", "CA certificate"))
      configuration.sendCANameList = true
    }
    switch options.verification {
    case .none: configuration.certificateVerification = .none
    case .peer: configuration.certificateVerification = .optionalVerification
    case .require: configuration.certificateVerification = .noHostnameVerification
    }
    if options.verification != .none && options.caFile.isEmpty {
      throw TLSProblem(
        setting: "tls_ca", file: "", message: "tls_verify \(options.verification.rawValue) needs CA certificates")
    }
    do {
      return try NIOSSLContext(configuration: configuration)
    } catch {
      // BoringSSL refuses a key that is not the certificate's.
      throw TLSProblem(
        setting: "tls_key", file: options.keyFile,
        message: "cannot be used with the certificate in \(options.certificateFile) (tls_cert): \(error)")
    }
  }

  /// The PEM certificates of a file (at least one), or the problem with it.
  private static func certificates(_ file: String, setting: String, _ what: String) throws(TLSProblem)
    -> [NIOSSLCertificate]
  {
    let certificates: [NIOSSLCertificate]
    do {
      certificates = try NIOSSLCertificate.fromPEMFile(file)
    } catch {
      throw TLSProblem(setting: setting, file: file, message: Self.explain(error, what))
    }
    guard !certificates.isEmpty else { throw TLSProblem(setting: setting, file: file, message: "no PEM \(what) in it") }
    return certificates
  }

  private static func explain(_ error: any Error, _ what: String) -> String {
    if let error = error as? IOError { return "cannot be read: \(error.description)" }
    return "not a readable PEM \(what) (\(error))"
  }
}

/// Sits behind the TLS handler: once the handshake is done it fires ``TLSConnectionEstablished`` (with the user a
/// verified client certificate names, for EXTERNAL); a failed handshake is logged and closes the connection.
final class TLSHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  let verification: TLSOptions.Verification
  let loginFrom: TLSOptions.LoginSource
  let logger: Logger

  init(verification: TLSOptions.Verification, loginFrom: TLSOptions.LoginSource, logger: Logger) {
    self.verification = verification
    self.loginFrom = loginFrom
    self.logger = logger
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    guard case TLSUserEvent.handshakeCompleted = event as? TLSUserEvent ?? .shutdownCompleted,
      let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
    else {
      return context.fireUserInboundEventTriggered(event)
    }
    var user: String?
    if self.verification != .none, let certificate = tls.peerCertificate {
      user = Self.loginName(of: certificate, from: self.loginFrom)
      if user == nil {
        self.logger.warning(
          "TLS client certificate has no \(self.loginFrom.rawValue) to log in with: EXTERNAL not offered",
          metadata: ["peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"])
      }
    }
    context.fireUserInboundEventTriggered(event)
    context.fireUserInboundEventTriggered(
      TLSConnectionEstablished(protocolVersion: Self.name(of: tls.tlsVersion), certificateUser: user))
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if let error = error as? NIOSSLError, case .uncleanShutdown = error {
      // A client that closes its socket without close_notify (most AMQP clients do): nothing was lost.
      context.close(promise: nil)
      return
    }
    if error is NIOSSLError || error is BoringSSLError {
      self.logger.warning(
        "TLS error, closing the connection: \(error)",
        metadata: ["peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"])
      context.close(promise: nil)
      return
    }
    context.fireErrorCaught(error)
  }

  /// The user name a certificate gives: its (last) common name, or its first DNS name, email or URI.
  static func loginName(of certificate: NIOSSLCertificate, from source: TLSOptions.LoginSource) -> String? {
    switch source {
    case .commonName:
      return certificate.subjectName.last { $0.type == .commonName }?.value
    case .subjectAlternativeName:
      for name in certificate._subjectAlternativeNames()
      where name.nameType == .dnsName || name.nameType == .email || name.nameType == .uri {
        return name.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
      }
      return nil
    }
  }

  /// RabbitMQ's spelling of a version (`tlsv1.3`).
  static func name(of version: TLSVersion?) -> String {
    switch version {
    case .tlsv13: "tlsv1.3"
    case .tlsv12: "tlsv1.2"
    case .tlsv11: "tlsv1.1"
    case .tlsv1: "tlsv1"
    case nil: "tls"
    }
  }
}

/// TLS for Warren's own clients (`warren health`, `warren ctl` against an HTTPS port, `warren perf` with amqps).
public struct TLSClient: Sendable {
  let context: NIOSSLContext
  let serverHostname: String?

  /// For `host`: the server's chain is checked against `caFile` (the system's roots when nil) and, for a host name,
  /// the name too; `insecure` checks nothing (a local health check against a self-signed certificate).
  public init(host: String, caFile: String?, insecure: Bool) throws {
    var configuration = TLSConfiguration.makeClientConfiguration()
    if let caFile { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) }
    let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
    if insecure {
      configuration.certificateVerification = .none
    } else if isAddress {
      configuration.certificateVerification = .noHostnameVerification
    }
    self.context = try NIOSSLContext(configuration: configuration)
    self.serverHostname = isAddress ? nil : host
  }

  /// The handler to put first on a new connection.
  public func makeHandler() throws -> any ChannelHandler {
    try NIOSSLClientHandler(context: self.context, serverHostname: self.serverHostname)
  }
}
