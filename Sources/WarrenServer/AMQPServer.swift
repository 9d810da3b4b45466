import Logging
import NIOCore
import NIOPosix
import WarrenCore
import WarrenStore
import WarrenSystem

/// One listening socket of the AMQP server.
public struct AMQPListener: Sendable {
  /// How logs and ``AMQPServer/addresses`` name it: `AMQP`, `AMQPS`.
  public var name: String
  public var host: String
  /// 0 for any free port.
  public var port: Int
  /// Adds handlers in front of the AMQP handler on each accepted connection (the TLS layer); a throw refuses it.
  public var prepare: (@Sendable (any Channel) throws -> Void)?
  /// Where accepted sockets live. Nil: on the broker's loop, with everything else. A group: each socket (its
  /// reads, writes and TLS) on one of its loops, its bytes handed to the broker's loop once per read and back
  /// once per flush (``BrokerSideChannel``).
  public var connectionLoops: (any EventLoopGroup)?

  public init(
    name: String, host: String, port: Int, connectionLoops: (any EventLoopGroup)? = nil,
    prepare: (@Sendable (any Channel) throws -> Void)? = nil
  ) {
    self.name = name
    self.host = host
    self.port = port
    self.connectionLoops = connectionLoops
    self.prepare = prepare
  }
}

/// The AMQP listeners: accept connections onto the broker's event loop.
public final class AMQPServer: Sendable {
  /// The address the first listener is bound to (with the real port when 0 was asked for).
  public let localAddress: SocketAddress
  /// Every listener's address, by its name (`AMQP`, `AMQPS`).
  public let addresses: [String: SocketAddress]
  /// The event loop that owns the broker and every connection.
  public let eventLoop: any EventLoop
  private let serverChannels: [any Channel]
  let runtime: NIOLoopBound<BrokerRuntime>

  private init(
    addresses: [String: SocketAddress], primary: String, eventLoop: any EventLoop, serverChannels: [any Channel],
    runtime: NIOLoopBound<BrokerRuntime>
  ) {
    self.localAddress = addresses[primary]!
    self.addresses = addresses
    self.eventLoop = eventLoop
    self.serverChannels = serverChannels
    self.runtime = runtime
  }

  /// Stops accepting on every listener.
  private func closeListeners() async {
    for channel in self.serverChannels { try? await channel.close() }
  }

  /// Binds the listener and serves `broker` (made on `eventLoop` by `makeBroker`).
  ///
  /// - Parameters:
  ///   - host: the address to bind, e.g. `127.0.0.1`.
  ///   - port: the port, 0 for any free one.
  ///   - eventLoop: the loop that owns the broker and its connections.
  ///   - makeBroker: builds the broker model on the loop.
  public static func start(
    host: String,
    port: Int,
    eventLoop: any EventLoop,
    logger: Logger,
    makeBroker: @escaping @Sendable () throws -> Broker
  ) async throws -> AMQPServer {
    try await Self.start(
      host: host, port: port, eventLoop: eventLoop, logger: logger,
      makeBrokerAndStore: { (try makeBroker(), nil) })
  }

  /// Binds the listener and serves the broker `makeBrokerAndStore` makes on `eventLoop` (recovering it from its
  /// store before anything connects), with the store's syncs on a thread of their own.
  public static func start(
    host: String,
    port: Int,
    eventLoop: any EventLoop,
    logger: Logger,
    makeBrokerAndStore: @escaping @Sendable () throws -> (Broker, MessageStore?)
  ) async throws -> AMQPServer {
    try await Self.start(
      listeners: [AMQPListener(name: "AMQP", host: host, port: port)], eventLoop: eventLoop, logger: logger,
      makeBrokerAndStore: makeBrokerAndStore)
  }

  /// Binds every listener (the plain one, the TLS one) and serves the broker `makeBrokerAndStore` makes on
  /// `eventLoop` (recovered from its store before anything connects). The broker and its queues are that loop's;
  /// a listener's sockets are too unless it names ``AMQPListener/connectionLoops``.
  public static func start(
    listeners: [AMQPListener],
    eventLoop: any EventLoop,
    logger: Logger,
    makeBrokerAndStore: @escaping @Sendable () throws -> (Broker, MessageStore?)
  ) async throws -> AMQPServer {
    precondition(!listeners.isEmpty, "an AMQP server needs a listener")
    let runtime = try await eventLoop.submit {
      let (broker, store) = try makeBrokerAndStore()
      let runtime = BrokerRuntime(broker: broker, eventLoop: eventLoop, logger: logger)
      runtime.startPeriodicWork()
      if let store {
        runtime.store = store
        // Two sync threads: a small batch starts while the previous one's fdatasync runs (MessageStore.syncSlots).
        store.syncSlots = 2
        let pool = NIOThreadPool(numberOfThreads: store.syncSlots)
        pool.start()
        runtime.syncPool = pool
      }
      return NIOLoopBound(runtime, eventLoop: eventLoop)
    }.get()
    var channels: [any Channel] = []
    var addresses: [String: SocketAddress] = [:]
    do {
      for listener in listeners {
        let prepare = listener.prepare
        let bootstrap = ServerBootstrap(group: eventLoop, childGroup: listener.connectionLoops ?? eventLoop)
          .serverChannelOption(.backlog, value: 1024)
          .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
          .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
          .childChannelOption(.maxMessagesPerRead, value: 16)
          .childChannelOption(
            .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 2048, maximum: 262_144)
          )
          .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
              try prepare?(channel)
              if channel.eventLoop === eventLoop {
                try channel.pipeline.syncOperations.addHandler(AMQPConnectionHandler(runtime: runtime.value))
              } else {
                let relay = ConnectionRelay(brokerLoop: eventLoop) { side in
                  try? side.pipeline.syncOperations.addHandler(AMQPConnectionHandler(runtime: runtime.value))
                }
                try channel.pipeline.syncOperations.addHandler(relay)
              }
            }
          }
        let channel = try await bootstrap.bind(host: listener.host, port: listener.port).get()
        channels.append(channel)
        guard let address = channel.localAddress else { throw ChannelError.unknownLocalAddress }
        addresses[listener.name] = address
        logger.info("\(listener.name) listener on \(address)")
      }
    } catch {
      for channel in channels { try? await channel.close() }
      throw error
    }
    return AMQPServer(
      addresses: addresses, primary: listeners[0].name, eventLoop: eventLoop, serverChannels: channels,
      runtime: runtime)
  }

  /// Runs `body` on the broker's event loop with a read-only view of the broker and its connections: how a scrape
  /// or an HTTP request learns the broker's state (one hop, nothing copied that it does not ask for).
  public func inspect<T: Sendable>(_ body: @escaping @Sendable (BrokerInspection) -> T) async throws -> T {
    let runtime = self.runtime
    return try await self.eventLoop.submit { body(BrokerInspection(runtime: runtime.value)) }.get()
  }

  /// Runs `body` with the broker model on its event loop.
  public func withBroker<T: Sendable>(_ body: @escaping @Sendable (Broker) throws -> T) async throws -> T {
    let runtime = self.runtime
    return try await self.eventLoop.submit { try body(runtime.value.broker) }.get()
  }

  /// Shuts down gracefully: stops accepting, cancels every consumer (basic.cancel), lets publishers finish what
  /// they are sending (until no connection has received anything for `quietPeriod`, or `timeout` passes) with
  /// their confirms, then closes every connection with 320 CONNECTION_FORCED and waits up to 5 s for them to go.
  public func drain(timeout: Duration, quietPeriod: Duration = .milliseconds(500)) async throws {
    let runtime = self.runtime
    await self.closeListeners()
    try await self.eventLoop.submit {
      runtime.value.isDraining = true
      for connection in runtime.value.connections.values { connection.cancelConsumersForShutdown() }
      runtime.value.flushDirty()
    }.get()
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    let quiet = TimeAmount(quietPeriod)
    while clock.now < deadline {
      let publishing = try await self.eventLoop.submit {
        runtime.value.connections.values.contains { $0.mayBePublishing(quietPeriod: quiet) }
      }.get()
      if !publishing { break }
      try await Task.sleep(for: .milliseconds(10))
    }
    try await self.shutdown()
    let closeDeadline = clock.now + .seconds(5)
    while clock.now < closeDeadline, try await self.connectionCount() > 0 {
      try await Task.sleep(for: .milliseconds(10))
    }
  }

  /// Whether the broker is ready for traffic: accepting connections and no resource alarm in effect.
  public func readiness() async throws -> (accepting: Bool, alarms: ResourceAlarms) {
    let runtime = self.runtime
    return try await self.eventLoop.submit { (!runtime.value.isDraining, runtime.value.alarms) }.get()
  }

  /// Checks memory every `interval` (the bytes the broker holds; resident memory and free disk every tenth time)
  /// and raises or clears the alarms (publishers are blocked while one is in effect). When held memory has fallen far
  /// below what the process keeps resident, freed memory is returned to the system (`malloc_trim`, off the loop).
  public func monitorResources(
    memoryLimit: Int, diskFreeLimit: Int, dataDirectory: String, interval: TimeAmount = .milliseconds(100)
  ) async throws {
    let runtime = self.runtime
    try await self.eventLoop.submit {
      runtime.value.alarms.memoryLimit = memoryLimit
      runtime.value.alarms.diskFreeLimit = diskFreeLimit
      var resident = ProcessStatistics.residentMemory()
      var diskFree = ProcessStatistics.diskFree(path: dataDirectory)
      var ticks = 0
      var trimmedAt = NIODeadline.uptimeNanoseconds(0)
      let check: () -> Void = {
        ticks += 1
        if ticks % 10 == 0 {
          resident = ProcessStatistics.residentMemory()
          diskFree = ProcessStatistics.diskFree(path: dataDirectory)
        }
        let held = runtime.value.heldBytes()
        let cleared = runtime.value.updateAlarms(heldBytes: held, residentMemory: resident, diskFree: diskFree)
        let now = NIODeadline.now()
        if (cleared || resident > 2 * held + ProcessStatistics.trimThreshold) && now - trimmedAt > .seconds(10) {
          trimmedAt = now
          ProcessStatistics.returnFreeMemoryInBackground()
        }
      }
      check()
      let bound = NIOLoopBound(check, eventLoop: runtime.value.eventLoop)
      runtime.value.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in bound.value() }
    }.get()
  }

  /// Sets the resource readings by hand (for tests): raises or clears the alarms as a monitor reading would.
  /// `heldBytes` defaults to what the broker holds now.
  public func updateResources(
    memoryLimit: Int, diskFreeLimit: Int, residentMemory: Int, diskFree: Int, heldBytes: Int? = nil
  ) async throws {
    let runtime = self.runtime
    try await self.eventLoop.submit {
      runtime.value.alarms.memoryLimit = memoryLimit
      runtime.value.alarms.diskFreeLimit = diskFreeLimit
      runtime.value.updateAlarms(
        heldBytes: heldBytes ?? runtime.value.heldBytes(), residentMemory: residentMemory, diskFree: diskFree)
    }.get()
  }

  /// The bytes the broker holds, as the memory alarm counts them.
  public func heldBytes() async throws -> Int {
    let runtime = self.runtime
    return try await self.eventLoop.submit { runtime.value.heldBytes() }.get()
  }

  /// Stops accepting, closes every connection with 320 CONNECTION_FORCED and waits for the listener to close.
  public func shutdown(reason: String = "broker is shutting down") async throws {
    await self.closeListeners()
    let runtime = self.runtime
    try await self.eventLoop.submit {
      for connection in runtime.value.connections.values { connection.forceClose(reason: reason) }
    }.get()
  }

  /// Writes and syncs what the store holds and stops its sync thread (after the connections are closed).
  public func closeStore() async throws {
    let runtime = self.runtime
    let pool = try await self.eventLoop.submit { () throws -> NIOThreadPool? in
      let pool = runtime.value.syncPool
      runtime.value.syncPool = nil
      try runtime.value.store?.close()
      runtime.value.store = nil
      return pool
    }.get()
    try await pool?.shutdownGracefully()
  }

  /// The number of open client connections.
  public func connectionCount() async throws -> Int {
    let runtime = self.runtime
    return try await self.eventLoop.submit { runtime.value.connections.count }.get()
  }
}

extension AMQPServer {
  /// RabbitMQ's aliveness test, in process: declares the queue `aliveness-test` in `vhost`, publishes a message to
  /// it through the default exchange and gets it back. Returns nil when that worked, else what failed.
  public func alivenessTest(vhost name: String) async throws -> String? {
    let runtime = self.runtime
    return try await self.eventLoop.submit { () -> String? in
      guard let vhost = runtime.value.broker.vhosts[name] else { return "vhost '\(name)' not found" }
      do {
        let queue = try vhost.declareQueue(name: "aliveness-test", connection: 0, ignoringLimits: true)
        _ = queue.purge()
        let body = "test_message"
        let routed = vhost.publish(
          Message.make(exchange: "", routingKey: queue.name, body: ByteBuffer(string: body)), to: vhost.defaultExchange)
        guard routed.accepted == 1 else { return "the test message was not routed" }
        guard let got = queue.get(noAck: true), String(buffer: got.message.body) == body else {
          return "the test message did not come back"
        }
        return nil
      } catch {
        return "\(error)"
      }
    }.get()
  }
}

/// What ``AMQPServer/inspect(_:)`` sees on the broker's event loop. Not to be kept beyond the call.
public struct BrokerInspection {
  let runtime: BrokerRuntime

  /// The broker model.
  public var broker: Broker { self.runtime.broker }
  /// The resource alarms and their limits.
  public var alarms: ResourceAlarms { self.runtime.alarms }
  /// Whether a graceful shutdown has begun.
  public var isDraining: Bool { self.runtime.isDraining }
  /// The number of client connections (handshaking ones included).
  public var connectionCount: Int { self.runtime.connections.count }

  /// Calls `body` with a summary of each client connection.
  public func forEachConnection(_ body: (ConnectionSummary) -> Void) {
    for connection in self.runtime.connections.values {
      body(
        ConnectionSummary(
          vhost: connection.vhost?.name ?? "", name: connection.name, user: connection.machine.username ?? "",
          channels: connection.channels.count, bytesReceived: connection.bytesReceived,
          bytesSent: connection.bytesSent))
    }
  }
}

/// A broker served on channels the caller makes: each ``addConnection(to:)`` puts the AMQP connection handler on a
/// channel's pipeline, with everything on the channel's event loop. For other transports and for fuzzing (an
/// `EmbeddedChannel` fed raw bytes).
public final class EmbeddedBroker {
  let runtime: BrokerRuntime

  /// Serves `broker` on `eventLoop` (every channel given later must be on it), with `store`'s syncs run on the loop
  /// when a read completes.
  public init(broker: Broker, eventLoop: any EventLoop, logger: Logger, store: MessageStore? = nil) {
    self.runtime = BrokerRuntime(broker: broker, eventLoop: eventLoop, logger: logger)
    self.runtime.store = store
  }

  /// Adds an AMQP server connection to the channel's pipeline (on its event loop).
  public func addConnection(to channel: any Channel) throws {
    try channel.pipeline.syncOperations.addHandler(AMQPConnectionHandler(runtime: self.runtime))
  }

  /// Storage made everything up to `token` durable: the confirms that waited for it go out.
  public func storageCompleted(upTo token: StorageToken) {
    self.runtime.storageCompleted(upTo: token)
  }

  /// Ends a read batch as the event loop would: flushes what connections wrote.
  public func readCompleted() {
    self.runtime.readCompleted()
  }
}
