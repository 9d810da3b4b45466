import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals
import WarrenConfig
import WarrenCore
import WarrenHTTP
import WarrenManagement
import WarrenMetrics
import WarrenServer
import WarrenStore
import WarrenSystem
import WarrenTLS

/// The broker as a service of a `ServiceGroup`: applies the topology, opens the AMQP and HTTP listeners, reads the
/// configuration again on SIGHUP, and on a graceful shutdown (SIGTERM, SIGINT) drains: no new connections,
/// consumers cancelled, publishers given `shutdown_timeout` to finish with their confirms, then every connection
/// closed with 320 CONNECTION_FORCED.
struct BrokerService: Service {
  let settings: ServerSettings
  let configuration: WarrenConfiguration
  let configPath: String?
  let portFile: String?
  let exchangeTypes: ExchangeRegistry
  let logger: Logger

  func run() async throws {
    let logger = self.logger
    let startTime = Date().timeIntervalSince1970
    let tls: TLSContextSource?
    do {
      tls = try self.settings.tlsOptions().map { options throws(TLSProblem) in
        try TLSContextSource(options: options, logger: logger)
      }
    } catch {
      logger.critical("TLS cannot be set up: \(error)")
      throw error
    }
    // Sockets on loops of their own, when asked for: TLS costs CPU per byte, and the broker's loop can then do
    // only the broker's work (docs/architecture.md, Concurrency).
    let connectionLoops: MultiThreadedEventLoopGroup? =
      self.settings.connectionThreads > 0
      ? MultiThreadedEventLoopGroup(numberOfThreads: self.settings.connectionThreads) : nil
    defer { if let connectionLoops { Task { try? await connectionLoops.shutdownGracefully() } } }
    var listeners: [AMQPListener] = []
    if self.settings.amqpPlain {
      listeners.append(
        AMQPListener(
          name: "AMQP", host: self.settings.amqpBind, port: self.settings.amqpPort,
          connectionLoops: self.settings.connectionThreadsPlain ? connectionLoops : nil))
    }
    if let tls {
      listeners.append(
        AMQPListener(
          name: "AMQPS", host: self.settings.amqpBind, port: self.settings.tlsPort, connectionLoops: connectionLoops
        ) { channel in
          try tls.prepareAMQP(channel)
        })
    }
    guard !listeners.isEmpty else {
      logger.critical("amqp_plain is false and TLS is not configured (tls_cert, tls_key): no AMQP listener to open")
      throw ExitCode(1)
    }
    let httpTLS: @Sendable (Bool, String) throws -> (@Sendable (any Channel) throws -> Void)? = { wanted, key in
      guard wanted else { return nil }
      guard let tls else {
        logger.critical("\(key) is true but TLS is not configured (tls_cert, tls_key)")
        throw ExitCode(1)
      }
      return { channel in try tls.prepareHTTP(channel) }
    }
    let managementPrepare = try httpTLS(self.settings.managementTLS, "management_tls")
    let metricsPrepare = try httpTLS(self.settings.metricsTLS, "metrics_tls")
    let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let amqp: AMQPServer
    do {
      // The topology is applied before the listener opens; a conflict stops the start.
      // Recovery from the data directory comes first, then the configuration's topology (declared over it).
      amqp = try await AMQPServer.start(
        listeners: listeners, eventLoop: eventLoops.next(), logger: logger,
        makeBrokerAndStore: { [settings, configuration, exchangeTypes] in
          let broker = Broker(
            registry: exchangeTypes, limits: settings.limits, defaultVirtualHost: settings.defaultVirtualHost)
          broker.connectionMax = settings.connectionMax > 0 ? settings.connectionMax : nil
          let persistence: BrokerPersistence
          do {
            persistence = try BrokerPersistence.open(directory: settings.dataDirectory, logger: logger)
          } catch {
            throw DataDirectoryUnusable(directory: settings.dataDirectory, reason: "\(error)")
          }
          persistence.recover(into: broker)
          // Users, vhosts, permissions and policies changed over the management API, then the file's topology.
          let runtimeDefinitions = DefinitionsFile(directory: settings.dataDirectory, logger: logger)
          let saved: WarrenConfiguration?
          do {
            saved = try runtimeDefinitions.load(registry: exchangeTypes)
          } catch {
            throw DataDirectoryUnusable(
              directory: settings.dataDirectory, reason: "\(runtimeDefinitions.path): \(error)")
          }
          saved?.restoreRuntimeDefinitions(into: broker)
          try configuration.mergingPolicies(of: saved).apply(to: broker)
          try persistence.attach(to: broker)
          let report = persistence.report
          logger.info(
            "recovered from \(settings.dataDirectory) in \(String(format: "%.3f", report.seconds)) s: \(report.exchanges) exchanges, \(report.queues) queues, \(report.bindings) bindings, \(report.messages.messages) messages (\(report.messages.redelivered) redelivered) from \(report.messages.records) records in \(report.messages.segments) segments"
          )
          if report.messages.corruptSkipped > 0 || report.topologyRecordsSkipped > 0 {
            logger.warning(
              "recovery skipped \(report.messages.corruptSkipped) corrupt message records and \(report.topologyRecordsSkipped) topology records"
            )
          }
          if report.messages.tornTailBytes > 0 {
            logger.warning("recovery cut \(report.messages.tornTailBytes) bytes of torn record tails")
          }
          return (broker, persistence.store)
        })
    } catch let error as DataDirectoryUnusable {
      logger.critical("\(error)")
      try? await eventLoops.shutdownGracefully()
      throw error
    } catch let error as IOError {
      // The listener could not be opened (the port is taken, say): not a problem of the configuration's.
      let ports = listeners.map { "\($0.name) \($0.host):\($0.port)" }.joined(separator: ", ")
      logger.critical("cannot open the AMQP listeners (\(ports)): \(error.description)")
      try? await eventLoops.shutdownGracefully()
      throw error
    } catch {
      logger.critical("the configuration cannot be applied: \(error)")
      try? await eventLoops.shutdownGracefully()
      throw error
    }
    if let path = self.configPath { logger.info("configuration \(path) applied") }
    // SIGHUP is trapped before the HTTP listener opens (which is when tests, and people, take the broker as up).
    let reloads = await UnixSignalsSequence(trapping: [.sighup])
    try await amqp.monitorResources(
      memoryLimit: self.settings.memoryLimit(totalMemory: ProcessStatistics.totalMemory()),
      diskFreeLimit: self.settings.diskFreeLimit, dataDirectory: self.settings.dataDirectory)
    let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
    let routes = HTTPRoutes(
      amqp: amqp,
      renderer: MetricsRenderer(
        prefix: self.settings.metricsPrefix, nodeName: "warren@\(host)", clusterName: "warren@\(host)",
        version: warrenVersion, startTime: startTime),
      dataDirectory: self.settings.dataDirectory, metricsNeedAuthentication: self.settings.metricsNeedAuthentication)
    let statistics = MessageStatistics()
    let node = ManagementNode(
      name: "warren@\(host)", version: warrenVersion, startTime: startTime, amqpPort: amqp.localAddress.port ?? 0,
      managementPort: self.settings.managementPort, dataDirectory: self.settings.dataDirectory)
    let api = ManagementAPI(
      amqp: amqp, node: node, statistics: statistics,
      definitions: DefinitionsFile(directory: self.settings.dataDirectory, logger: logger),
      registry: self.exchangeTypes)
    let management = try await HTTPServer.start(
      host: self.settings.managementBind, port: self.settings.managementPort, group: eventLoops, logger: logger,
      idleTimeout: .milliseconds(Int64(self.settings.httpIdleTimeout * 1000)), label: "management",
      maxBodySize: self.settings.managementMaxBody, prepare: managementPrepare
    ) { request in
      await api.respond(to: request)
    }
    node.listening(on: management.localAddress.port ?? 0)
    let sampling = Task {
      while !Task.isCancelled {
        await statistics.sample(amqp)
        try? await Task.sleep(for: .seconds(5))
      }
    }
    let http = try await HTTPServer.start(
      host: self.settings.metricsBind, port: self.settings.metricsPort, group: eventLoops, logger: logger,
      idleTimeout: .milliseconds(Int64(self.settings.httpIdleTimeout * 1000)), prepare: metricsPrepare
    ) { request, remote in
      await routes.respond(to: request, from: remote)
    }
    for warning in self.configuration.warnings { logger.warning("\(warning)") }
    if let portFile = self.portFile, let port = amqp.localAddress.port {
      try "\(port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
    }

    // Runs until a graceful shutdown is asked for; SIGHUP reads the configuration again meanwhile.
    await cancelWhenGracefulShutdown {
      for await _ in reloads {
        await self.reload(amqp)
        if let tls {
          do throws(TLSProblem) {
            try tls.reload()
            logger.notice("SIGHUP: TLS certificate and key read again from \(tls.options.certificateFile)")
          } catch {
            logger.error("SIGHUP: TLS files not reloaded, the old certificate stays in use: \(error)")
          }
        }
      }
    }

    logger.info("shutting down: draining connections (up to \(self.settings.shutdownTimeout) s)")
    try await amqp.drain(timeout: .milliseconds(Int64(self.settings.shutdownTimeout * 1000)))
    do {
      try await amqp.closeStore()
    } catch {
      logger.error("message store: the last sync failed: \(error)")
    }
    sampling.cancel()
    await management.shutdown()
    await http.shutdown()
    try await eventLoops.shutdownGracefully()
    logger.info("stopped")
  }

  private func reload(_ amqp: AMQPServer) async {
    guard let path = self.configPath else {
      self.logger.notice("SIGHUP: no configuration file to read again")
      return
    }
    do {
      let saved = try? DefinitionsFile(directory: self.settings.dataDirectory, logger: self.logger)
        .load(registry: self.exchangeTypes)
      let reloaded = try ConfigLoader.load(path: path, registry: self.exchangeTypes).mergingPolicies(of: saved)
      let changes = try await amqp.withBroker { broker in reloaded.applyAdditions(to: broker) }
      self.logger.notice("SIGHUP: configuration \(path) read again: \(changes.isEmpty ? "nothing to add" : "")")
      for change in changes { self.logger.notice("SIGHUP: \(change)") }
    } catch let problems as ConfigProblems {
      self.logger.error("SIGHUP: configuration \(path) not applied, it has problems:\n\(problems)")
    } catch {
      self.logger.error("SIGHUP: configuration \(path) not applied: \(error)")
    }
  }
}

extension ServerSettings {
  /// The TLS options the settings describe, nil without a certificate and key.
  func tlsOptions() -> TLSOptions? {
    guard self.tlsEnabled else { return nil }
    return TLSOptions(
      certificateFile: self.tlsCertificate, keyFile: self.tlsKey,
      keyPassword: ProcessInfo.processInfo.environment["WARREN_TLS_KEY_PASSWORD"], caFile: self.tlsCA,
      verification: TLSOptions.Verification(rawValue: self.effectiveTLSVerify) ?? .require,
      minimumVersion: self.tlsMinimumVersion,
      loginFrom: TLSOptions.LoginSource(rawValue: self.tlsLoginFrom) ?? .commonName)
  }
}

/// The data directory cannot be used (not writable, or another broker holds it).
struct DataDirectoryUnusable: Error, CustomStringConvertible {
  var directory: String
  var reason: String
  var description: String { "the data directory \(self.directory) cannot be used: \(self.reason)" }
}

/// Warren's version.
let warrenVersion = "0.1.0"

/// `warren health`: asks a running broker's HTTP listener whether it is healthy (exit 0) or not (exit 1); the
/// container image's HEALTHCHECK, which has no curl.
struct Health: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check a running broker over HTTP: exit 0 when /healthz (or --path) answers 200, else 1.")

  @Option(
    help:
      "The broker's HTTP address, HOST:PORT or https://HOST:PORT (default 127.0.0.1 and WARREN_METRICS_PORT or 15692).")
  var address: String?
  @OptionGroup var https: HTTPSFlags

  @Option(help: "The path to ask: /healthz (alive), /readyz (ready for traffic) or /api/aliveness-test/%2F.")
  var path: String = "/healthz"

  @Option(help: "For /api paths: an administrator user (HTTP basic authentication).") var user: String = "guest"
  @Option(help: "The user's password.") var password: String = "guest"

  func run() async throws {
    let port = ProcessInfo.processInfo.environment["WARREN_METRICS_PORT"] ?? "15692"
    let address = self.address ?? "127.0.0.1:\(port)"
    do {
      let body = try await httpGet(
        address: address, path: self.path, credentials: (self.user, self.password), tls: self.https.options)
      print(body, terminator: "")
    } catch {
      printError("warren health: \(error)")
      throw ExitCode(1)
    }
  }
}
