import AMQPProtocol
import NIOCore
import WarrenCore

/// The connection-level protocol of AMQP 0-9-1 as a value type: protocol header, start/start-ok, tune/tune-ok,
/// open and the close handshakes. It takes events and returns actions; the handler carries them out.
public struct ConnectionStateMachine: Sendable {
  /// Where the handshake is.
  public enum State: Sendable, Equatable {
    case awaitingProtocolHeader
    case awaitingStartOk
    case awaitingTuneOk
    case awaitingOpen
    case open
    /// The server sent connection.close and waits for close-ok.
    case closing
    case closed
  }

  /// What the handler must do.
  public enum Action: Sendable, Equatable {
    /// Nothing.
    case none
    /// Send a method on channel 0.
    case send(AMQPMethod)
    /// Answer a wrong protocol header with ours, then close the socket.
    case sendProtocolHeaderAndClose
    /// Check these credentials and report with ``authenticated(_:)``; no password for EXTERNAL (the user name
    /// comes from a verified client certificate: the user must exist).
    case authenticate(mechanism: String, username: String, password: String?)
    /// Tuning is done: apply the limits (frame_max also to the decoder), start heartbeats.
    case applyTuning(Tuning)
    /// Check vhost access and report with ``virtualHostOpened(_:)``.
    case openVirtualHost(String)
    /// Send connection.close with this error and wait for close-ok.
    case sendClose(BrokerError, classID: UInt16, methodID: UInt16)
    /// Send connection.close-ok, then close the socket.
    case sendCloseOkAndClose
    /// Close the socket (after a close-ok was received, or after a refused login from an old client).
    case closeSocket
  }

  /// The negotiated limits.
  public struct Tuning: Sendable, Equatable {
    public var channelMax: UInt16
    public var frameMax: UInt32
    public var heartbeat: UInt16
  }

  public private(set) var state: State = .awaitingProtocolHeader
  /// The negotiated limits, once tuned.
  public private(set) var tuning: Tuning
  /// The client's properties from start-ok.
  public private(set) var clientProperties: FieldTable = [:]
  /// The authenticated user name.
  public private(set) var username: String?
  /// The mechanism used to log in.
  public private(set) var mechanism: String = ""
  /// The virtual host opened.
  public private(set) var virtualHost: String?
  /// The user name a verified TLS client certificate gives: EXTERNAL is offered only when there is one.
  public private(set) var certificateUser: String?

  let limits: BrokerLimits
  let serverProperties: FieldTable

  /// Creates the machine with the server's offer and properties.
  public init(limits: BrokerLimits, serverProperties: FieldTable) {
    self.limits = limits
    self.serverProperties = serverProperties
    self.tuning = Tuning(channelMax: limits.channelMax, frameMax: limits.frameMax, heartbeat: limits.heartbeat)
  }

  /// Whether frames on channels other than 0 are accepted.
  public var isOpen: Bool { self.state == .open }

  /// Whether the client asked to be told why a login failed (`authentication_failure_close`).
  public var clientWantsAuthenticationFailureClose: Bool {
    self.clientProperties["capabilities"]?.tableValue?["authentication_failure_close"]?.boolValue == true
  }

  /// Whether the client handles server-sent basic.cancel (`consumer_cancel_notify`).
  /// Whether the client asked for connection.blocked and connection.unblocked.
  public var clientSupportsConnectionBlocked: Bool {
    self.clientProperties["capabilities"]?.tableValue?["connection.blocked"]?.boolValue == true
  }

  public var clientSupportsConsumerCancelNotify: Bool {
    self.clientProperties["capabilities"]?.tableValue?["consumer_cancel_notify"]?.boolValue == true
  }

  /// The TLS handshake verified a client certificate that names this user (before the protocol header).
  public mutating func certificateVerified(user: String) {
    guard self.state == .awaitingProtocolHeader else { return }
    self.certificateUser = user
  }

  /// The mechanisms offered: EXTERNAL first when a verified client certificate names a user (as RabbitMQ's
  /// rabbitmq_auth_mechanism_ssl).
  public var mechanisms: String { self.certificateUser == nil ? "PLAIN AMQPLAIN" : "EXTERNAL PLAIN AMQPLAIN" }

  /// The eight bytes before the first frame arrived.
  public mutating func protocolHeaderReceived(_ bytes: [UInt8]) -> Action {
    guard self.state == .awaitingProtocolHeader else { return .none }
    guard bytes == amqpProtocolHeader else {
      self.state = .closed
      return .sendProtocolHeaderAndClose
    }
    self.state = .awaitingStartOk
    return .send(
      .connectionStart(
        ConnectionStart(
          versionMajor: 0, versionMinor: 9, serverProperties: self.serverProperties,
          mechanisms: Array(self.mechanisms.utf8), locales: Array("en_US".utf8))))
  }

  /// A method arrived on channel 0.
  public mutating func methodReceived(_ method: AMQPMethod) -> Action {
    switch (self.state, method) {
    case (.closed, _):
      return .none
    case (.closing, .connectionCloseOk):
      self.state = .closed
      return .closeSocket
    case (.closing, .connectionClose):
      // Both sides closed at once: answer and finish.
      self.state = .closed
      return .sendCloseOkAndClose
    case (.closing, _):
      return .none  // everything else is discarded while closing
    case (.awaitingStartOk, .connectionStartOk(let startOk)):
      self.clientProperties = startOk.clientProperties
      self.mechanism = startOk.mechanism
      if startOk.mechanism == "EXTERNAL", let user = self.certificateUser {
        return .authenticate(mechanism: "EXTERNAL", username: user, password: nil)
      }
      guard let credentials = Self.parseCredentials(mechanism: startOk.mechanism, response: startOk.response) else {
        if startOk.mechanism != "PLAIN" && startOk.mechanism != "AMQPLAIN" {
          return self.fail(
            .commandInvalid("unknown authentication mechanism '\(startOk.mechanism)'"), method)
        }
        return self.refuseLogin()
      }
      return .authenticate(mechanism: startOk.mechanism, username: credentials.0, password: credentials.1)
    case (.awaitingTuneOk, .connectionTuneOk(let tuneOk)):
      let frameMin = 4096
      if tuneOk.frameMax != 0 && Int(tuneOk.frameMax) < frameMin {
        return self.fail(.notAllowed("frame_max=\(tuneOk.frameMax) < \(frameMin) min size"), method)
      }
      if tuneOk.frameMax > self.limits.frameMax {
        return self.fail(.notAllowed("frame_max=\(tuneOk.frameMax) > \(self.limits.frameMax) max size"), method)
      }
      if tuneOk.channelMax > self.limits.channelMax {
        return self.fail(.notAllowed("channel_max=\(tuneOk.channelMax) > \(self.limits.channelMax) max"), method)
      }
      self.tuning = Tuning(
        channelMax: tuneOk.channelMax == 0 ? self.limits.channelMax : tuneOk.channelMax,
        frameMax: tuneOk.frameMax == 0 ? self.limits.frameMax : tuneOk.frameMax,
        heartbeat: tuneOk.heartbeat)
      self.state = .awaitingOpen
      return .applyTuning(self.tuning)
    case (.awaitingOpen, .connectionOpen(let open)):
      return .openVirtualHost(open.virtualHost)
    case (.open, .connectionClose):
      self.state = .closed
      return .sendCloseOkAndClose
    case (.open, .connectionUpdateSecret):
      return .send(.connectionUpdateSecretOk(ConnectionUpdateSecretOk()))
    case (.open, .connectionBlocked), (.open, .connectionUnblocked):
      return .none  // a client may send these too; nothing to do
    case (_, .connectionClose):
      self.state = .closed
      return .sendCloseOkAndClose
    default:
      let text =
        self.state == .open
        ? "unexpected method on channel 0: \(method.name)"
        : "expected a different method during the handshake, got \(method.name)"
      return self.fail(BrokerError(replyCode: self.state == .open ? 503 : 504, text: text), method)
    }
  }

  /// The result of ``Action/authenticate(mechanism:username:password:)``.
  public mutating func authenticated(_ username: String?) -> Action {
    guard self.state == .awaitingStartOk else { return .none }
    guard let username else { return self.refuseLogin() }
    self.username = username
    self.state = .awaitingTuneOk
    return .send(
      .connectionTune(
        ConnectionTune(
          channelMax: self.limits.channelMax, frameMax: self.limits.frameMax, heartbeat: self.limits.heartbeat)))
  }

  /// The result of ``Action/openVirtualHost(_:)``: nil when allowed, else the error.
  public mutating func virtualHostOpened(_ name: String, error: BrokerError?) -> Action {
    guard self.state == .awaitingOpen else { return .none }
    if let error {
      return self.fail(error, classID: 10, methodID: 40)
    }
    self.virtualHost = name
    self.state = .open
    return .send(.connectionOpenOk(ConnectionOpenOk()))
  }

  /// A hard error raised elsewhere (a channel, the decoder): close the connection with it.
  public mutating func connectionError(_ error: BrokerError, classID: UInt16 = 0, methodID: UInt16 = 0) -> Action {
    self.fail(error, classID: classID, methodID: methodID)
  }

  /// The server is shutting down: close with 320 CONNECTION_FORCED.
  public mutating func shutdown(reason: String) -> Action {
    self.fail(BrokerError(replyCode: 320, text: reason), classID: 0, methodID: 0)
  }

  private mutating func fail(_ error: BrokerError, _ method: AMQPMethod) -> Action {
    self.fail(error, classID: method.classID, methodID: method.methodID)
  }

  private mutating func fail(_ error: BrokerError, classID: UInt16, methodID: UInt16) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingProtocolHeader:
      self.state = .closed
      return .closeSocket
    default:
      self.state = .closing
      return .sendClose(error, classID: classID, methodID: methodID)
    }
  }

  private mutating func refuseLogin() -> Action {
    let error = BrokerError.accessRefused(
      "Login was refused using authentication mechanism \(self.mechanism). For details see the broker logfile.")
    guard self.clientWantsAuthenticationFailureClose else {
      self.state = .closed
      return .closeSocket
    }
    // As RabbitMQ: connection.close, then the socket stays open for the client's close-ok (or a few seconds), so the
    // client reads the reason instead of a reset.
    self.state = .closing
    return .sendClose(error, classID: 10, methodID: 11)
  }

  /// Reads PLAIN (`authzid NUL user NUL password`) and AMQPLAIN (a field table without its length) responses.
  public static func parseCredentials(mechanism: String, response: [UInt8]) -> (String, String)? {
    switch mechanism {
    case "PLAIN":
      let parts = response.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
      guard parts.count == 3 else { return nil }
      return (String(decoding: parts[1], as: UTF8.self), String(decoding: parts[2], as: UTF8.self))
    case "AMQPLAIN":
      var buffer = ByteBuffer()
      buffer.writeInteger(UInt32(response.count))
      buffer.writeBytes(response)
      guard let table = try? buffer.readAMQPFieldTable(),
        let login = table["LOGIN"], let password = table["PASSWORD"]
      else { return nil }
      func text(_ v: FieldValue) -> String? {
        switch v {
        case .longString(let s): return s
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        default: return nil
        }
      }
      guard let user = text(login), let pass = text(password) else { return nil }
      return (user, pass)
    default:
      return nil
    }
  }
}
