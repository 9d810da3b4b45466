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
import WarrenSystem
import WarrenServer

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
    subcommands: [Serve.self, CheckConfig.self, ExportDefinitions.self, Perf.self, Health.self],
    defaultSubcommand: Serve.self
  )
}

/// `warren` / `warren serve`: run the broker.
struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Run the broker (the default).")

  @Option(help: "The address the AMQP listener binds to (default 127.0.0.1).")
  var bind: String?

  @Option(help: "The AMQP port, 0 picks a free one (default 5672).")
  var port: Int?

  @Option(help: "A YAML configuration file (see config/warren.yaml).")
  var config: String?

  @Option(help: "The HTTP (health, definitions, metrics) port, 0 picks a free one (default 15692).")
  var metricsPort: Int?

  @Option(help: "Write the bound AMQP port to this file once listening (for test harnesses).")
  var portFile: String?

  @Option(help: "The largest message body accepted, in bytes (default 128 MiB, as RabbitMQ 3.x).")
  var maxMessageSize: Int?

  @Option(help: "The frame_max offered to clients (default 131072).")
  var frameMax: UInt32?

  @Option(help: "The channel_max offered to clients (default 2047).")
  var channelMax: UInt16?

  @Option(help: "The heartbeat interval offered to clients, in seconds, 0 disables (default 60).")
  var heartbeat: UInt16?

  @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
  var logLevel: String?

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
    if let bind = self.bind { server.amqpBind = bind }
    if let port = self.port { server.amqpPort = port }
    if let port = self.metricsPort { server.metricsPort = port }
    if let size = self.maxMessageSize { server.maxMessageSize = size }
    if let frameMax = self.frameMax { server.frameMax = frameMax }
    if let channelMax = self.channelMax { server.channelMax = channelMax }
    if let heartbeat = self.heartbeat { server.heartbeat = heartbeat }
    if let level = self.logLevel { server.logLevel = level }

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

/// `warren check-config FILE`: validates a configuration without starting (exit 0 or 1).
struct CheckConfig: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "check-config", abstract: "Check a YAML configuration file without starting the broker.")

  @Argument(help: "The file.") var file: String

  func run() async throws {
    do {
      _ = try ConfigLoader.load(path: self.file, registry: configuredExchangeTypes)
      print("\(self.file): OK")
    } catch {
      printError("\(error)\n\(self.file): \(error.problems.count) problem(s)")
      throw ExitCode(1)
    }
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

  func run() async throws {
    guard self.format == "json" || self.format == "yaml" else { throw ValidationError("--format is json or yaml") }
    if let address = self.from {
      let path = self.format == "yaml" ? "/api/definitions?format=yaml" : "/api/definitions"
      print(try await httpGet(address: address, path: path), terminator: "")
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

/// The server keys that environment variables override (documented in the README).
func applyEnvironment(to server: inout ServerSettings) throws {
  let environment = ProcessInfo.processInfo.environment
  func integer(_ name: String) throws -> Int? {
    guard let text = environment[name] else { return nil }
    guard let value = Int(text) else { throw ValidationError("\(name) must be an integer, not '\(text)'") }
    return value
  }
  if let value = environment["WARREN_AMQP_BIND"] { server.amqpBind = value }
  if let value = try integer("WARREN_AMQP_PORT") { server.amqpPort = value }
  if let value = environment["WARREN_METRICS_BIND"] { server.metricsBind = value }
  if let value = try integer("WARREN_METRICS_PORT") { server.metricsPort = value }
  if let value = environment["WARREN_DATA_DIR"] { server.dataDirectory = value }
  if let value = environment["WARREN_LOG_LEVEL"] { server.logLevel = value }
  if let value = try integer("WARREN_HEARTBEAT") { server.heartbeat = UInt16(clamping: value) }
  if let value = try integer("WARREN_FRAME_MAX") { server.frameMax = UInt32(clamping: value) }
  if let value = try integer("WARREN_CHANNEL_MAX") { server.channelMax = UInt16(clamping: value) }
  if let value = try integer("WARREN_MAX_MESSAGE_SIZE") { server.maxMessageSize = value }
  if let value = environment["WARREN_METRICS_PREFIX"] {
    guard ServerSettings.isValidMetricsPrefix(value) else {
      throw ValidationError("WARREN_METRICS_PREFIX must be a Prometheus metric name, not '\(value)'")
    }
    server.metricsPrefix = value
  }
  if let text = environment["WARREN_MEMORY_HIGH_WATERMARK"] {
    guard let value = Double(text), value > 0 else {
      throw ValidationError("WARREN_MEMORY_HIGH_WATERMARK must be a fraction (0 < x <= 1) or bytes, not '\(text)'")
    }
    server.memoryHighWatermark = value
  }
  if let value = try integer("WARREN_DISK_FREE_LIMIT") { server.diskFreeLimit = value }
  if let text = environment["WARREN_SHUTDOWN_TIMEOUT"] {
    guard let value = Double(text), value >= 0 else {
      throw ValidationError("WARREN_SHUTDOWN_TIMEOUT must be a number of seconds, not '\(text)'")
    }
    server.shutdownTimeout = value
  }
}

func printError(_ text: String) {
  FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// A plain HTTP GET of `path` from `address` (host:port); the body, or an error for a status other than 200.
func httpGet(address: String, path: String) async throws -> String {
  let parts = address.split(separator: ":")
  guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--from is HOST:PORT") }
  let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .connect(host: String(parts[0]), port: port) { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHTTPClientHandlers()
        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
      }
    }
  return try await channel.executeThenClose { inbound, outbound in
    var headers = HTTPHeaders()
    headers.add(name: "Host", value: address)
    headers.add(name: "Connection", value: "close")
    try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)))
    try await outbound.write(.end(nil))
    var status = HTTPResponseStatus.ok
    var body = ByteBuffer()
    for try await part in inbound {
      switch part {
      case .head(let head): status = head.status
      case .body(var bytes): body.writeBuffer(&bytes)
      case .end:
        guard status == .ok else { throw ValidationError("\(address)\(path): \(status)") }
        return String(buffer: body)
      }
    }
    throw ValidationError("\(address)\(path): the connection closed early")
  }
}
