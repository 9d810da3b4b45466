import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import WarrenConfig
import WarrenCore
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
    subcommands: [Serve.self, CheckConfig.self, ExportDefinitions.self, Perf.self],
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
    // Signals are taken over first: a SIGHUP that arrives while starting must not end the process.
    let signals = terminationAndReloadSignals()
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
    raiseOpenFileLimit()
    let limits = server.limits
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let amqp: AMQPServer
    do {
      // The topology is applied before the listener opens; a conflict stops the start.
      amqp = try await AMQPServer.start(
        host: server.amqpBind, port: server.amqpPort, eventLoop: group.next(), logger: logger,
        makeBroker: { [limits, configuration, registry = configuredExchangeTypes, server] in
          let broker = Broker(registry: registry, limits: limits, defaultVirtualHost: server.defaultVirtualHost)
          try configuration.apply(to: broker)
          return broker
        })
    } catch let error as BrokerError {
      logger.critical("the configuration cannot be applied: \(error)")
      try await group.shutdownGracefully()
      throw ExitCode(1)
    }
    if let path = self.config { logger.info("configuration \(path) applied") }
    let http = try await HTTPServer.start(
      host: server.metricsBind, port: server.metricsPort, group: group, logger: logger
    ) { [amqp] request in
      await httpResponse(to: request, amqp: amqp)
    }
    for warning in configuration.warnings { logger.warning("\(warning)") }
    if let portFile = self.portFile, let port = amqp.localAddress.port {
      try "\(port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
    }
    var signal = "end of signals"
    for await received in signals {
      signal = received
      guard received == "SIGHUP" else { break }
      guard let path = self.config else {
        logger.notice("SIGHUP: no configuration file to read again")
        continue
      }
      do {
        let reloaded = try ConfigLoader.load(path: path, registry: configuredExchangeTypes)
        let changes = try await amqp.withBroker { broker in reloaded.applyAdditions(to: broker) }
        logger.notice("SIGHUP: configuration \(path) read again: \(changes.isEmpty ? "nothing to add" : "")")
        for change in changes { logger.notice("SIGHUP: \(change)") }
      } catch let problems as ConfigProblems {
        logger.error("SIGHUP: configuration \(path) not applied, it has problems:\n\(problems)")
      }
    }
    logger.info("received \(signal), shutting down")
    await http.shutdown()
    try await amqp.shutdown()
    // Give clients a bounded time to answer connection.close.
    for _ in 0..<100 where try await amqp.connectionCount() > 0 {
      try await Task.sleep(for: .milliseconds(50))
    }
    try await group.shutdownGracefully()
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

/// The HTTP routes: health, readiness, and the running topology (`/api/definitions`, `?format=yaml`).
func httpResponse(to request: HTTPRequestHead, amqp: AMQPServer) async -> HTTPResponse {
  let parts = request.uri.split(separator: "?", maxSplits: 1)
  let path = parts.first.map(String.init) ?? "/"
  let query = parts.count > 1 ? String(parts[1]) : ""
  guard request.method == .GET else { return HTTPResponse(status: .methodNotAllowed, body: "GET only\n") }
  switch path {
  case "/healthz":
    return HTTPResponse(body: "ok\n")
  case "/readyz":
    return HTTPResponse(body: "ready\n")  // served once the topology is applied and the AMQP listener accepts
  case "/api/definitions":
    do {
      let running = try await amqp.withBroker { WarrenConfiguration(runningTopologyOf: $0) }
      if query.contains("format=yaml") {
        return HTTPResponse(contentType: "application/yaml", body: try running.yaml())
      }
      return HTTPResponse(contentType: "application/json", body: try running.rabbitMQDefinitionsJSON() + "\n")
    } catch {
      return HTTPResponse(status: .internalServerError, body: "\(error)\n")
    }
  default:
    return HTTPResponse(status: .notFound, body: "not found: \(path)\n")
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
}

func printError(_ text: String) {
  FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// SIGTERM, SIGINT (stop) and SIGHUP (read the configuration again), by name, as they arrive.
func terminationAndReloadSignals() -> AsyncStream<String> {
  AsyncStream { continuation in
    let queue = DispatchQueue(label: "warren.signals")
    var sources: [any DispatchSourceSignal] = []
    for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler { continuation.yield(name) }
      source.resume()
      sources.append(source)
    }
    signalSources = sources
  }
}

nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

/// Raises the soft limit of open files to the hard limit: every connection is a file descriptor.
func raiseOpenFileLimit() {
  var limit = rlimit()
  guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
  limit.rlim_cur = limit.rlim_max
  _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
}

#if canImport(Glibc)
  let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#else
  let RLIMIT_NOFILE_VALUE = RLIMIT_NOFILE
#endif

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
