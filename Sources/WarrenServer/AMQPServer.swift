import Logging
import NIOCore
import NIOPosix
import WarrenCore

/// The AMQP listener: accepts connections onto the broker's event loop.
public final class AMQPServer: Sendable {
  /// The address the listener is bound to (with the real port when 0 was asked for).
  public let localAddress: SocketAddress
  /// The event loop that owns the broker and every connection.
  public let eventLoop: any EventLoop
  private let serverChannel: any Channel
  private let runtime: NIOLoopBound<BrokerRuntime>

  private init(
    localAddress: SocketAddress, eventLoop: any EventLoop, serverChannel: any Channel,
    runtime: NIOLoopBound<BrokerRuntime>
  ) {
    self.localAddress = localAddress
    self.eventLoop = eventLoop
    self.serverChannel = serverChannel
    self.runtime = runtime
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
    let runtime = try await eventLoop.submit {
      NIOLoopBound(BrokerRuntime(broker: try makeBroker(), eventLoop: eventLoop, logger: logger), eventLoop: eventLoop)
    }.get()
    let bootstrap = ServerBootstrap(group: eventLoop)
      .serverChannelOption(.backlog, value: 1024)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.maxMessagesPerRead, value: 16)
      .childChannelOption(
        .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 2048, maximum: 262_144)
      )
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(AMQPConnectionHandler(runtime: runtime.value))
        }
      }
    let channel = try await bootstrap.bind(host: host, port: port).get()
    guard let address = channel.localAddress else { throw ChannelError.unknownLocalAddress }
    logger.info("AMQP listener on \(address)")
    return AMQPServer(localAddress: address, eventLoop: eventLoop, serverChannel: channel, runtime: runtime)
  }

  /// Runs `body` with the broker model on its event loop.
  public func withBroker<T: Sendable>(_ body: @escaping @Sendable (Broker) throws -> T) async throws -> T {
    let runtime = self.runtime
    return try await self.eventLoop.submit { try body(runtime.value.broker) }.get()
  }

  /// Stops accepting, closes every connection with 320 CONNECTION_FORCED and waits for the listener to close.
  public func shutdown(reason: String = "broker is shutting down") async throws {
    try? await self.serverChannel.close()
    let runtime = self.runtime
    try await self.eventLoop.submit {
      for connection in runtime.value.connections.values { connection.forceClose(reason: reason) }
    }.get()
  }

  /// The number of open client connections.
  public func connectionCount() async throws -> Int {
    let runtime = self.runtime
    return try await self.eventLoop.submit { runtime.value.connections.count }.get()
  }
}
