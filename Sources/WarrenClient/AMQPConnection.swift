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
    let endpoint = try Endpoint(url: url)
    let eventLoop = group.next()
    let opened = eventLoop.makePromise(of: Void.self)
    let channel = try await ClientBootstrap(group: eventLoop)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
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

/// The parts of an AMQP URL.
struct Endpoint {
  var host = "127.0.0.1"
  var port = 5672
  var username = "guest"
  var password = "guest"
  var virtualHost = "/"

  init(url: String) throws {
    guard url.hasPrefix("amqp://") else { throw AMQPClientError.badURL(url) }
    var rest = Substring(url.dropFirst("amqp://".count))
    if let at = rest.lastIndex(of: "@") {
      let credentials = rest[..<at]
      rest = rest[rest.index(after: at)...]
      if let colon = credentials.firstIndex(of: ":") {
        self.username = Self.decode(credentials[..<colon])
        self.password = Self.decode(credentials[credentials.index(after: colon)...])
      } else {
        self.username = Self.decode(credentials)
      }
    }
    var hostPort = rest
    if let slash = rest.firstIndex(of: "/") {
      hostPort = rest[..<slash]
      let vhost = rest[rest.index(after: slash)...]
      if !vhost.isEmpty { self.virtualHost = Self.decode(vhost) }
    }
    if let colon = hostPort.lastIndex(of: ":") {
      self.host = String(hostPort[..<colon])
      guard let port = Int(hostPort[hostPort.index(after: colon)...]) else { throw AMQPClientError.badURL(url) }
      self.port = port
    } else if !hostPort.isEmpty {
      self.host = String(hostPort)
    }
  }

  /// Percent-decoding (`%2F` is `/`).
  static func decode(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    var i = text.utf8.startIndex
    let utf8 = text.utf8
    while i < utf8.endIndex {
      let byte = utf8[i]
      if byte == UInt8(ascii: "%"), let h = utf8.index(i, offsetBy: 2, limitedBy: utf8.endIndex), h < utf8.endIndex,
        let value = UInt8(String(decoding: utf8[utf8.index(after: i)...h], as: UTF8.self), radix: 16)
      {
        bytes.append(value)
        i = utf8.index(after: h)
      } else {
        bytes.append(byte)
        i = utf8.index(after: i)
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
