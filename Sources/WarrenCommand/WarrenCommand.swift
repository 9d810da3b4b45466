import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
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
    subcommands: [Serve.self, Perf.self],
    defaultSubcommand: Serve.self
  )
}

/// `warren` / `warren serve`: run the broker.
struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Run the broker (the default).")

  @Option(help: "The address the AMQP listener binds to.")
  var bind: String = "127.0.0.1"

  @Option(help: "The AMQP port (0 picks a free one).")
  var port: Int = 5672

  @Option(help: "A YAML configuration file.")
  var config: String?

  @Option(help: "Write the bound AMQP port to this file once listening (for test harnesses).")
  var portFile: String?

  @Option(help: "The largest message body accepted, in bytes (RabbitMQ 3.x's default: 128 MiB).")
  var maxMessageSize: Int = 128 * 1024 * 1024

  @Option(help: "The frame_max offered to clients.")
  var frameMax: UInt32 = 131_072

  @Option(help: "The channel_max offered to clients.")
  var channelMax: UInt16 = 2047

  @Option(help: "The heartbeat interval offered to clients, in seconds (0 disables).")
  var heartbeat: UInt16 = 60

  @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
  var logLevel: String = "info"

  func run() async throws {
    let level = Logger.Level(rawValue: self.logLevel) ?? .info
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardOutput(label: label)
      handler.logLevel = level
      return handler
    }
    let logger = Logger(label: "warren")
    raiseOpenFileLimit()
    if let config = self.config {
      logger.notice("configuration file \(config) accepted; topology from YAML is not applied yet")
    }
    var limits = BrokerLimits()
    limits.maxMessageSize = self.maxMessageSize
    limits.frameMax = self.frameMax
    limits.channelMax = self.channelMax
    limits.heartbeat = self.heartbeat
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await AMQPServer.start(
      host: self.bind, port: self.port, eventLoop: group.next(), logger: logger,
      makeBroker: { [limits, registry = configuredExchangeTypes] in Broker(registry: registry, limits: limits) })
    if let portFile = self.portFile, let port = server.localAddress.port {
      try "\(port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
    }
    let signal = await waitForTerminationSignal()
    logger.info("received \(signal), shutting down")
    try await server.shutdown()
    // Give clients a bounded time to answer connection.close.
    for _ in 0..<100 where try await server.connectionCount() > 0 {
      try await Task.sleep(for: .milliseconds(50))
    }
    try await group.shutdownGracefully()
  }
}

/// Waits for SIGTERM or SIGINT and returns its name.
func waitForTerminationSignal() async -> String {
  await withCheckedContinuation { continuation in
    let queue = DispatchQueue(label: "warren.signals")
    let once = OnceFlag()
    var sources: [any DispatchSourceSignal] = []
    for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler {
        if once.set() { continuation.resume(returning: name) }
      }
      source.resume()
      sources.append(source)
    }
    signalSources = sources
  }
}

nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

/// A flag that is set once; used from the signal queue only.
private final class OnceFlag: @unchecked Sendable {
  private var isSet = false
  func set() -> Bool {
    if isSet { return false }
    isSet = true
    return true
  }
}

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
