import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import UnixSignals
import WarrenConfig
import WarrenCore
import WarrenMetrics
import WarrenServer
import WarrenSystem
import WarrenTLS

/// The `warren` command line, as a library: an executable calls ``WarrenCommandLine/main(exchangeTypes:)`` with
/// the exchange types it registers, so a user's own package can build a `warren` with more of them.
public enum WarrenCommandLine {
  /// Parses the process's arguments and runs `warren` (serve, perf) with these exchange types besides the core's.
  public static func main(exchangeTypes: [any ExchangeType]) async {
    var registry = ExchangeRegistry()
    for type in exchangeTypes { registry.register(type) }
    configuredExchangeTypes = registry
    await Warren.main()
  }
}

/// Set once by ``WarrenCommandLine/main(exchangeTypes:)`` before any command runs.
nonisolated(unsafe) private var configuredExchangeTypes = ExchangeRegistry()

struct Warren: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "warren",
    abstract: "An AMQP 0-9-1 message broker.",
    version: "0.1.0",
    subcommands: [
      Serve.self, CheckConfig.self, ExportDefinitions.self, Settings.self, Perf.self, Health.self, Ctl.self,
    ],
    defaultSubcommand: Serve.self
  )
}

/// `warren` / `warren serve`: run the broker.
struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Run the broker (the default).")

  @Option(help: flagHelp("amqp_bind")) var bind: String?
  @Option(help: flagHelp("amqp_port")) var port: String?
  @Option(help: "A YAML configuration file (see config/warren.yaml).") var config: String?
  @Option(help: flagHelp("metrics_port")) var metricsPort: String?
  @Option(help: flagHelp("management_port")) var managementPort: String?
  @Option(help: "Write the bound AMQP port to this file once listening (for test harnesses).") var portFile: String?
  @Option(help: flagHelp("max_message_size")) var maxMessageSize: String?
  @Option(help: flagHelp("frame_max")) var frameMax: String?
  @Option(help: flagHelp("channel_max")) var channelMax: String?
  @Option(help: flagHelp("consumer_timeout")) var consumerTimeout: String?
  @Option(help: flagHelp("heartbeat")) var heartbeat: String?
  @Option(help: flagHelp("log_level")) var logLevel: String?
  @Option(help: flagHelp("data_dir")) var dataDir: String?
  @Option(help: flagHelp("handshake_timeout")) var handshakeTimeout: String?
  @Option(help: flagHelp("connection_threads")) var connectionThreads: String?
  @Option(help: flagHelp("tls_port")) var tlsPort: String?
  @Option(help: flagHelp("tls_cert")) var tlsCert: String?
  @Option(help: flagHelp("tls_key")) var tlsKey: String?
  @Option(help: flagHelp("tls_ca")) var tlsCa: String?
  @Option(help: flagHelp("tls_verify")) var tlsVerify: String?

  /// The flags given, by the settings-table key they set.
  var settingFlags: [(key: String, value: String?)] {
    [
      ("amqp_bind", self.bind), ("amqp_port", self.port), ("metrics_port", self.metricsPort),
      ("management_port", self.managementPort),
      ("max_message_size", self.maxMessageSize), ("frame_max", self.frameMax), ("channel_max", self.channelMax),
      ("heartbeat", self.heartbeat), ("log_level", self.logLevel), ("data_dir", self.dataDir),
      ("tls_port", self.tlsPort), ("tls_cert", self.tlsCert), ("tls_key", self.tlsKey), ("tls_ca", self.tlsCa),
      ("tls_verify", self.tlsVerify), ("handshake_timeout", self.handshakeTimeout),
      ("consumer_timeout", self.consumerTimeout), ("connection_threads", self.connectionThreads),
    ]
  }

  func run() async throws {
    // A SIGHUP that arrives while starting must not end the process (SIGTERM and SIGINT stop it, gracefully once
    // the service group runs).
    signal(SIGHUP, SIG_IGN)
    // Settings: the file, then WARREN_* environment variables, then command-line flags.
    var configuration = WarrenConfiguration()
    if let path = self.config {
      do {
        configuration = try ConfigLoader.load(path: path, registry: configuredExchangeTypes)
      } catch {
        printError("\(error)\nwarren: the configuration has \(error.problems.count) problem(s); not starting")
        throw ExitCode(1)
      }
    }
    var server = configuration.server
    do {
      try applyEnvironment(to: &server)
    } catch {
      printError("warren: \(error)")
      throw ExitCode(1)
    }
    for (key, value) in self.settingFlags {
      guard let value, let setting = ServerSetting.named(key) else { continue }
      if let problem = setting.set(value, in: &server) {
        printError("warren: --\(setting.flag ?? key): \(problem)")
        throw ExitCode(1)
      }
    }

    let level = Logger.Level(rawValue: server.logLevel) ?? .info
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardOutput(label: label)
      handler.logLevel = level
      return handler
    }
    let logger = Logger(label: "warren")
    ProcessStatistics.raiseOpenFileLimit()
    let service = BrokerService(
      settings: server, configuration: configuration, configPath: self.config, portFile: self.portFile,
      exchangeTypes: configuredExchangeTypes, logger: logger)
    let group = ServiceGroup(
      configuration: ServiceGroupConfiguration(
        services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    do {
      try await group.run()
    } catch {
      logger.critical("warren stopped: \(error)")
      throw ExitCode(1)
    }
  }
}

/// A flag's help, from the settings table.
func flagHelp(_ key: String) -> ArgumentHelp {
  guard let setting = ServerSetting.named(key) else { return "" }
  return ArgumentHelp(
    "\(setting.help.prefix(1).uppercased() + setting.help.dropFirst()) (default \(setting.defaultValue)).")
}

/// `warren settings`: the settings table (YAML key, environment variable, flag, default, meaning) as Markdown.
struct Settings: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print every server setting: YAML key, environment variable, flag, default, meaning.")

  func run() {
    print(ServerSetting.markdownTable)
  }
}

/// `warren check-config FILE`: validates a configuration without starting (exit 0 or 1).
struct CheckConfig: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "check-config", abstract: "Check a YAML configuration file without starting the broker.")

  @Argument(help: "The file.") var file: String

  func run() async throws {
    let configuration: WarrenConfiguration
    do {
      configuration = try ConfigLoader.load(path: self.file, registry: configuredExchangeTypes)
    } catch {
      printError("\(error)\n\(self.file): \(error.problems.count) problem(s)")
      throw ExitCode(1)
    }
    // The certificate and key are loaded as the broker would load them.
    if let options = configuration.server.tlsOptions(), let problem = TLSContextSource.check(options) {
      let key = problem.file.isEmpty ? "tls_verify" : problem.setting
      printError(
        "\(ConfigLoader.problem(atServerKey: key, in: self.file, message: problem.description))\n\(self.file): 1 problem(s)"
      )
      throw ExitCode(1)
    }
    print("\(self.file): OK")
  }
}

/// `warren export-definitions`: a configuration's topology as RabbitMQ definitions JSON or Warren YAML.
struct ExportDefinitions: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "export-definitions",
    abstract: "Print a configuration's topology as RabbitMQ definitions JSON (or as Warren YAML).",
    discussion: "The input is a Warren YAML file or a RabbitMQ definitions.json: this converts both ways.")

  @Option(help: "The configuration (YAML, or a RabbitMQ definitions.json).") var config: String?
  @Option(help: "A running warren's HTTP address, e.g. 127.0.0.1:15692: export what it runs.") var from: String?
  @Option(help: "json (RabbitMQ's definitions) or yaml (Warren's).") var format: String = "json"
  @Option(help: "With --from: an administrator user of that broker.") var user: String = "guest"
  @Option(help: "With --from: the user's password.") var password: String = "guest"

  func run() async throws {
    guard self.format == "json" || self.format == "yaml" else { throw ValidationError("--format is json or yaml") }
    if let address = self.from {
      let path = self.format == "yaml" ? "/api/definitions?format=yaml" : "/api/definitions"
      print(
        try await httpGet(address: address, path: path, credentials: (self.user, self.password)), terminator: "")
      return
    }
    guard let config = self.config else { throw ValidationError("give --config FILE or --from HOST:PORT") }
    let configuration: WarrenConfiguration
    do {
      configuration = try ConfigLoader.load(path: config, registry: configuredExchangeTypes)
    } catch {
      printError("\(error)")
      throw ExitCode(1)
    }
    switch self.format {
    case "json": print(try configuration.rabbitMQDefinitionsJSON())
    case "yaml": print(try configuration.yaml(), terminator: "")
    default: throw ValidationError("--format is json or yaml")
    }
  }
}

/// The `WARREN_*` environment variables of the settings table override the file.
func applyEnvironment(to server: inout ServerSettings) throws {
  let problems = ServerSetting.applyEnvironment(ProcessInfo.processInfo.environment, to: &server)
  if !problems.isEmpty { throw ValidationError(problems.joined(separator: "\n")) }
}

func printError(_ text: String) {
  FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// A plain HTTP GET of `path` from `address` (host:port); the body, or an error for a status other than 200.
func httpGet(address: String, path: String, credentials: (String, String)? = nil, tls: HTTPSOptions? = nil)
  async throws -> String
{
  let (status, body) = try await httpRequest(
    address: address, method: .GET, path: path, credentials: credentials, tls: tls)
  guard status == .ok else { throw ValidationError("\(address)\(path): \(status)") }
  return String(buffer: body)
}

/// One HTTP/1.1 request to `address` (HOST:PORT), with basic authentication when given: the status and body.
func httpRequest(
  address given: String, method: HTTPMethod, path: String, body: ByteBuffer? = nil,
  credentials: (String, String)? = nil, headers extra: [(String, String)] = [], tls: HTTPSOptions? = nil
) async throws -> (HTTPResponseStatus, ByteBuffer) {
  // HOST:PORT, or http:// or https:// before it.
  var address = given
  var tls = tls
  if address.hasPrefix("https://") {
    address.removeFirst(8)
    tls = tls ?? HTTPSOptions()
  } else if address.hasPrefix("http://") {
    address.removeFirst(7)
  }
  if address.hasSuffix("/") { address.removeLast() }
  guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
    throw ValidationError("the address is HOST:PORT (or https://HOST:PORT), not '\(given)'")
  }
  let host = String(address[..<colon])
  let security = try tls.map { try TLSClient(host: host, caFile: $0.caFile, insecure: $0.insecure) }
  let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .connect(host: host, port: port) { channel in
      channel.eventLoop.makeCompletedFuture {
        if let security { try channel.pipeline.syncOperations.addHandler(try security.makeHandler()) }
        try channel.pipeline.syncOperations.addHTTPClientHandlers()
        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
      }
    }
  return try await channel.executeThenClose { inbound, outbound in
    var headers = HTTPHeaders()
    headers.add(name: "Host", value: address)
    headers.add(name: "Connection", value: "close")
    if let (user, password) = credentials {
      headers.add(name: "Authorization", value: "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())
    }
    for (name, value) in extra { headers.add(name: name, value: value) }
    if let body {
      headers.add(name: "Content-Type", value: "application/json")
      headers.add(name: "Content-Length", value: "\(body.readableBytes)")
    }
    try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)))
    if let body { try await outbound.write(.body(.byteBuffer(body))) }
    try await outbound.write(.end(nil))
    var status = HTTPResponseStatus.ok
    var received = ByteBuffer()
    for try await part in inbound {
      switch part {
      case .head(let head): status = head.status
      case .body(var bytes): received.writeBuffer(&bytes)
      case .end: return (status, received)
      }
    }
    throw ValidationError("\(address)\(path): the connection closed early")
  }
}

/// `--ca` and `--insecure`: HTTPS (also implied by an https:// address) and how the server is checked.
struct HTTPSFlags: ParsableArguments {
  @Option(help: "HTTPS: CA certificates (PEM) to check the server against (default: the system's).") var ca: String?
  @Flag(help: "HTTPS without checking the server's certificate (a local check against a self-signed one).")
  var insecure = false

  /// Nil unless a flag asks for HTTPS.
  var options: HTTPSOptions? {
    self.ca == nil && !self.insecure ? nil : HTTPSOptions(caFile: self.ca, insecure: self.insecure)
  }
}

/// How an HTTPS request checks the server: against these CA certificates (the system's when nil), or not at all.
struct HTTPSOptions {
  var caFile: String?
  var insecure = false
}
