import AMQPProtocol
import NIOCore
import NIOPosix

/// A connection to an AMQP 0-9-1 broker (Warren, RabbitMQ, ...).
///
/// ```swift
/// let connection = try await AMQPConnection.connect(to: "amqp://guest:guest@127.0.0.1:5672/")
/// let channel = try await connection.openChannel()
/// try await channel.declareQueue("hello")
/// try await channel.publish("hi", routingKey: "hello")
/// try await connection.close()
/// ```
public final class AMQPConnection: Sendable {
  let nioChannel: any Channel
  let handler: NIOLoopBound<ClientHandler>

  private init(nioChannel: any Channel, handler: NIOLoopBound<ClientHandler>) {
    self.nioChannel = nioChannel
    self.handler = handler
  }

  var eventLoop: any EventLoop { self.nioChannel.eventLoop }

  /// Connects and logs in.
  ///
  /// - Parameters:
  ///   - url: `amqp://user:password@host:port/vhost` (vhost `%2F` or empty is `/`).
  ///   - name: the connection name the broker shows.
  ///   - heartbeat: the largest heartbeat interval accepted, in seconds (0 for none).
  public static func connect(
    to url: String,
    name: String = "WarrenClient",
    heartbeat: UInt16 = 60,
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) async throws -> AMQPConnection {
    guard let endpoint = AMQPURL(url) else { throw AMQPClientError.badURL(url) }
    let eventLoop = group.next()
    let opened = eventLoop.makePromise(of: Void.self)
    let channel = try await ClientBootstrap(group: eventLoop)
      .channelOption(.tcpOption(.tcp_nodelay), value: 1)
      .connectTimeout(.seconds(30))
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            ClientHandler(
              username: endpoint.username, password: endpoint.password, virtualHost: endpoint.virtualHost,
              heartbeat: heartbeat, connectionName: name, opened: opened))
        }
      }
      .connect(host: endpoint.host, port: endpoint.port).get()
    try await opened.futureResult.get()
    let handler = try await eventLoop.submit {
      NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientHandler.self), eventLoop: eventLoop)
    }.get()
    return AMQPConnection(nioChannel: channel, handler: handler)
  }

  /// Opens a new channel.
  public func openChannel() async throws -> AMQPChannel {
    let handler = self.handler
    let promise = self.eventLoop.makePromise(of: AMQPMethod.self)
    let number = try await self.eventLoop.submit { () throws -> UInt16 in
      if let error = handler.value.closedError { throw error }
      var number = handler.value.lastChannelNumber
      repeat {
        number = number == UInt16.max ? 1 : number + 1
      } while handler.value.channels[number] != nil
      handler.value.lastChannelNumber = number
      handler.value.channels[number] = ClientChannelState()
      handler.value.call(.channelOpen(ChannelOpen()), channel: number, promise: promise)
      return number
    }.get()
    _ = try await promise.futureResult.get()
    let channel = AMQPChannel(connection: self, number: number)
    try await self.eventLoop.submit { handler.value.channels[number]?.publicChannel = channel }.get()
    return channel
  }

  /// Closes the connection cleanly (connection.close, then close-ok).
  public func close() async throws {
    let handler = self.handler
    let promise = self.eventLoop.makePromise(of: Void.self)
    try await self.eventLoop.submit {
      guard handler.value.context != nil, handler.value.closedError == nil else {
        promise.succeed(())
        return
      }
      handler.value.closePromise = promise
      handler.value.send(
        .connectionClose(ConnectionClose(replyCode: 200, replyText: "Goodbye", classID: 0, methodID: 0)), channel: 0)
    }.get()
    try await promise.futureResult.get()
  }

  /// Whether the connection is still open.
  public var isOpen: Bool { self.nioChannel.isActive }

  // MARK: The simple layer

  /// Declares an exchange (`direct` unless told otherwise) on a channel of its own.
  public func createExchange(name: String, type: String = "direct") async throws {
    try await self.simpleChannel().declareExchange(name, type: type)
  }

  /// Declares a queue and binds it to `exchange` with its own name as the routing key.
  public func createQueue(name: String, exchange: String) async throws {
    let channel = try await self.simpleChannel()
    try await channel.declareQueue(name)
    try await channel.bindQueue(name, exchange: exchange, routingKey: name)
  }

  /// Publishes a text message to `exchange` with the routing key `to`.
  public func publish(_ text: String, to routingKey: String, exchange: String) async throws {
    try await self.simpleChannel().publish(text, exchange: exchange, routingKey: routingKey)
  }

  /// Calls `handler` with each message of `queue` (acknowledging it after the handler returns) until the
  /// connection closes.
  public func subscribe(queue: String, handler: @escaping @Sendable (Delivery) async throws -> Void) async throws {
    let channel = try await self.openChannel()
    for try await delivery in try await channel.consume(queue: queue) {
      try await handler(delivery)
      try await delivery.ack()
    }
  }

  private let simple = SimpleChannelCache()

  private func simpleChannel() async throws -> AMQPChannel {
    if let channel = await self.simple.channel, await channel.isOpen { return channel }
    let channel = try await self.openChannel()
    await self.simple.set(channel)
    return channel
  }
}

/// The channel the simple layer reuses.
actor SimpleChannelCache {
  var channel: AMQPChannel?
  func set(_ channel: AMQPChannel) { self.channel = channel }
}
