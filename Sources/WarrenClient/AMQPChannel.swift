import AMQPProtocol
import NIOCore

/// An AMQP channel: declare, bind, publish, consume, get, acknowledge. Calls on one channel are answered in order.
public final class AMQPChannel: Sendable {
  /// The channel number.
  public let number: UInt16
  let connection: AMQPConnection

  init(connection: AMQPConnection, number: UInt16) {
    self.connection = connection
    self.number = number
  }

  private var handler: NIOLoopBound<ClientHandler> { self.connection.handler }
  private var eventLoop: any EventLoop { self.connection.eventLoop }

  /// Sends a synchronous method and waits for the reply.
  @discardableResult
  func call(_ method: AMQPMethod) async throws -> AMQPMethod {
    let handler = self.handler
    let number = self.number
    let promise = self.eventLoop.makePromise(of: AMQPMethod.self)
    self.eventLoop.execute { handler.value.call(method, channel: number, promise: promise) }
    return try await promise.futureResult.get()
  }

  /// Sends a method that has no reply.
  func send(_ method: AMQPMethod) async throws {
    let handler = self.handler
    let number = self.number
    try await self.eventLoop.submit { () throws in
      guard let state = handler.value.channels[number] else { throw AMQPClientError.connectionLost }
      if let error = state.closedError ?? handler.value.closedError { throw error }
      handler.value.send(method, channel: number)
    }.get()
  }

  /// Whether the channel is open.
  public var isOpen: Bool {
    get async {
      let handler = self.handler
      let number = self.number
      return
        (try? await self.eventLoop.submit {
          handler.value.channels[number].map { $0.closedError == nil } ?? false
        }.get()) ?? false
    }
  }

  /// Closes the channel.
  public func close() async throws {
    try await self.call(.channelClose(ChannelClose(replyCode: 200, replyText: "Goodbye", classID: 0, methodID: 0)))
  }

  // MARK: Topology

  /// Declares an exchange of any registered type (`direct`, `fanout`, `topic`, `headers`, ...).
  public func declareExchange(
    _ name: String, type: String = "direct", durable: Bool = false, autoDelete: Bool = false,
    isInternal: Bool = false, arguments: FieldTable = [:]
  ) async throws {
    try await self.call(
      .exchangeDeclare(
        ExchangeDeclare(
          exchange: name, type: type, durable: durable, autoDelete: autoDelete, isInternal: isInternal,
          arguments: arguments)))
  }

  /// Deletes an exchange.
  public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws {
    try await self.call(.exchangeDelete(ExchangeDelete(exchange: name, ifUnused: ifUnused)))
  }

  /// What queue.declare answered.
  public struct QueueInfo: Sendable {
    /// The queue's name (the broker's choice when declared with an empty name).
    public let name: String
    /// Its ready messages.
    public let messageCount: UInt32
    /// Its consumers.
    public let consumerCount: UInt32
  }

  /// Declares a queue; an empty name asks the broker for one.
  @discardableResult
  public func declareQueue(
    _ name: String = "", passive: Bool = false, durable: Bool = false, exclusive: Bool = false,
    autoDelete: Bool = false, arguments: FieldTable = [:]
  ) async throws -> QueueInfo {
    let reply = try await self.call(
      .queueDeclare(
        QueueDeclare(
          queue: name, passive: passive, durable: durable, exclusive: exclusive, autoDelete: autoDelete,
          arguments: arguments)))
    guard case .queueDeclareOk(let ok) = reply else { throw AMQPClientError.connectionLost }
    return QueueInfo(name: ok.queue, messageCount: ok.messageCount, consumerCount: ok.consumerCount)
  }

  /// Deletes a queue; returns how many messages it had.
  @discardableResult
  public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws -> UInt32 {
    let reply = try await self.call(.queueDelete(QueueDelete(queue: name, ifUnused: ifUnused, ifEmpty: ifEmpty)))
    guard case .queueDeleteOk(let ok) = reply else { return 0 }
    return ok.messageCount
  }

  /// Removes every ready message; returns how many.
  @discardableResult
  public func purgeQueue(_ name: String) async throws -> UInt32 {
    let reply = try await self.call(.queuePurge(QueuePurge(queue: name)))
    guard case .queuePurgeOk(let ok) = reply else { return 0 }
    return ok.messageCount
  }

  /// Binds a queue to an exchange.
  public func bindQueue(_ queue: String, exchange: String, routingKey: String = "", arguments: FieldTable = [:])
    async throws
  {
    try await self.call(
      .queueBind(QueueBind(queue: queue, exchange: exchange, routingKey: routingKey, arguments: arguments)))
  }

  /// Unbinds a queue from an exchange.
  public func unbindQueue(_ queue: String, exchange: String, routingKey: String = "", arguments: FieldTable = [:])
    async throws
  {
    try await self.call(
      .queueUnbind(QueueUnbind(queue: queue, exchange: exchange, routingKey: routingKey, arguments: arguments)))
  }

  /// Binds an exchange to another (exchange-to-exchange).
  public func bindExchange(
    _ destination: String, source: String, routingKey: String = "", arguments: FieldTable = [:]
  ) async throws {
    try await self.call(
      .exchangeBind(
        ExchangeBind(destination: destination, source: source, routingKey: routingKey, arguments: arguments)))
  }

  // MARK: Publishing

  /// Turns on publisher confirms: from now on ``publish(_:exchange:routingKey:properties:mandatory:)`` returns
  /// once the broker has the message (and throws if it nacked or returned it).
  public func enableConfirms() async throws {
    try await self.call(.confirmSelect(ConfirmSelect()))
    let handler = self.handler
    let number = self.number
    try await self.eventLoop.submit { handler.value.channels[number]?.confirmMode = true }.get()
  }

  /// Publishes a message. With confirms on, waits for the broker's confirm.
  public func publish(
    _ body: ByteBuffer, exchange: String = "", routingKey: String, properties: BasicProperties = .init(),
    mandatory: Bool = false
  ) async throws {
    let handler = self.handler
    let number = self.number
    let promise = self.eventLoop.makePromise(of: Void.self)
    try await self.eventLoop.submit { () throws in
      if let (tag, state) = try handler.value.publish(
        channel: number, exchange: exchange, routingKey: routingKey, body: body, properties: properties,
        mandatory: mandatory)
      {
        state.pendingConfirms.append(
          PendingConfirm(tag: tag, promise: promise, exchange: exchange, routingKey: routingKey, returned: nil))
      } else {
        promise.succeed(())
      }
    }.get()
    try await promise.futureResult.get()
  }

  /// A message to publish in a batch.
  public struct OutgoingMessage: Sendable {
    public var body: ByteBuffer
    public var routingKey: String
    public var properties: BasicProperties
    public init(_ body: ByteBuffer, routingKey: String, properties: BasicProperties = .init()) {
      self.body = body
      self.routingKey = routingKey
      self.properties = properties
    }
  }

  /// Publishes messages in one write and, with confirms on, waits until the broker has confirmed them all
  /// (throwing the first failure).
  public func publishBatch(_ messages: [OutgoingMessage], exchange: String = "", mandatory: Bool = false)
    async throws
  {
    let handler = self.handler
    let number = self.number
    let eventLoop = self.eventLoop
    let promises = try await self.eventLoop.submit { () throws -> [EventLoopFuture<Void>] in
      var futures: [EventLoopFuture<Void>] = []
      for message in messages {
        if let (tag, state) = try handler.value.publish(
          channel: number, exchange: exchange, routingKey: message.routingKey, body: message.body,
          properties: message.properties, mandatory: mandatory)
        {
          let promise = eventLoop.makePromise(of: Void.self)
          state.pendingConfirms.append(
            PendingConfirm(tag: tag, promise: promise, exchange: exchange, routingKey: message.routingKey))
          futures.append(promise.futureResult)
        }
      }
      return futures
    }.get()
    for future in promises { try await future.get() }
  }

  /// Publishes a text message.
  public func publish(
    _ text: String, exchange: String = "", routingKey: String, properties: BasicProperties = .init(),
    mandatory: Bool = false
  ) async throws {
    try await self.publish(
      ByteBuffer(string: text), exchange: exchange, routingKey: routingKey, properties: properties,
      mandatory: mandatory)
  }

  // MARK: Consuming

  /// Limits unacknowledged deliveries (per consumer, or for the whole channel when `global`).
  public func qos(prefetchCount: UInt16, global: Bool = false) async throws {
    try await self.call(.basicQos(BasicQos(prefetchCount: prefetchCount, global: global)))
  }

  /// Starts a consumer: its deliveries as an asynchronous sequence, which ends when the consumer is cancelled
  /// and throws when the channel closes.
  public func consume(
    queue: String, consumerTag: String = "", noAck: Bool = false, exclusive: Bool = false,
    arguments: FieldTable = [:]
  ) async throws -> Consumer {
    let (stream, continuation) = AsyncThrowingStream<Delivery, any Error>.makeStream()
    let handler = self.handler
    let number = self.number
    let promise = self.eventLoop.makePromise(of: AMQPMethod.self)
    // The consumer must be registered when consume-ok is read: deliveries may follow it in the same read. The
    // callback is attached on the event loop before the request is sent, so it runs as the reply is handled.
    self.eventLoop.execute {
      promise.futureResult.whenSuccess { reply in
        if case .basicConsumeOk(let ok) = reply {
          handler.value.channels[number]?.consumers[ok.consumerTag] = continuation
        }
      }
      handler.value.call(
        .basicConsume(
          BasicConsume(
            queue: queue, consumerTag: consumerTag, noAck: noAck, exclusive: exclusive, arguments: arguments)),
        channel: number,
        reply: .method(promise))
    }
    let reply = try await promise.futureResult.get()
    guard case .basicConsumeOk(let ok) = reply else { throw AMQPClientError.connectionLost }
    return Consumer(tag: ok.consumerTag, channel: self, stream: stream)
  }

  /// Stops a consumer; its sequence ends.
  public func cancel(consumerTag: String) async throws {
    try await self.call(.basicCancel(BasicCancel(consumerTag: consumerTag)))
    let handler = self.handler
    let number = self.number
    try await self.eventLoop.submit {
      handler.value.channels[number]?.consumers.removeValue(forKey: consumerTag)?.finish()
    }.get()
  }

  /// Fetches one message (basic.get), or nil when the queue is empty.
  public func get(queue: String, noAck: Bool = false) async throws -> Delivery? {
    let handler = self.handler
    let number = self.number
    let promise = self.eventLoop.makePromise(of: Delivery?.self)
    self.eventLoop.execute {
      handler.value.call(.basicGet(BasicGet(queue: queue, noAck: noAck)), channel: number, reply: .get(promise))
    }
    return try await promise.futureResult.get()
  }

  /// Acknowledges a delivery (and every earlier one with `multiple`).
  public func ack(deliveryTag: UInt64, multiple: Bool = false) async throws {
    try await self.send(.basicAck(BasicAck(deliveryTag: deliveryTag, multiple: multiple)))
  }

  /// Negatively acknowledges a delivery.
  public func nack(deliveryTag: UInt64, multiple: Bool = false, requeue: Bool = true) async throws {
    try await self.send(.basicNack(BasicNack(deliveryTag: deliveryTag, multiple: multiple, requeue: requeue)))
  }

  /// Rejects a delivery.
  public func reject(deliveryTag: UInt64, requeue: Bool = true) async throws {
    try await self.send(.basicReject(BasicReject(deliveryTag: deliveryTag, requeue: requeue)))
  }
}

/// A consumer: an asynchronous sequence of its deliveries.
public struct Consumer: AsyncSequence, Sendable {
  public typealias Element = Delivery
  /// The consumer tag.
  public let tag: String
  /// The channel it consumes on.
  public let channel: AMQPChannel
  let stream: AsyncThrowingStream<Delivery, any Error>

  public func makeAsyncIterator() -> AsyncThrowingStream<Delivery, any Error>.AsyncIterator {
    self.stream.makeAsyncIterator()
  }

  /// Cancels the consumer.
  public func cancel() async throws { try await self.channel.cancel(consumerTag: self.tag) }
}
