import AMQPProtocol
import DequeModule
import NIOCore

/// What went wrong, with the AMQP reply code and text when the broker said it.
public enum AMQPClientError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The broker closed the channel (a soft error, e.g. 404 NOT_FOUND).
  case channelClosed(replyCode: UInt16, replyText: String)
  /// The broker closed the connection (a hard error, e.g. 403 ACCESS_REFUSED at login).
  case connectionClosed(replyCode: UInt16, replyText: String)
  /// The socket closed without a close handshake.
  case connectionLost
  /// The broker nacked a published message (publisher confirms).
  case publishNacked
  /// The broker returned a mandatory message it could not route.
  case unroutable(replyCode: UInt16, replyText: String)
  /// A URL that is not `amqp://user:pass@host:port/vhost`.
  case badURL(String)

  public var description: String {
    switch self {
    case .channelClosed(let code, let text): return "channel closed by broker: \(code) \(text)"
    case .connectionClosed(let code, let text): return "connection closed by broker: \(code) \(text)"
    case .connectionLost: return "connection lost"
    case .publishNacked: return "the broker nacked the message"
    case .unroutable(let code, let text): return "message returned: \(code) \(text)"
    case .badURL(let url): return "bad AMQP URL: \(url)"
    }
  }
}

/// A message delivered to a consumer or fetched with basic.get.
public struct Delivery: Sendable {
  /// The body.
  public let body: ByteBuffer
  /// The properties (headers, content type, reply-to, correlation id, ...).
  public let properties: BasicProperties
  /// The tag to acknowledge it with, on its channel.
  public let deliveryTag: UInt64
  /// Whether it was delivered before.
  public let redelivered: Bool
  /// The exchange it was published to.
  public let exchange: String
  /// The routing key it was published with.
  public let routingKey: String
  /// The consumer it was delivered to (empty for basic.get).
  public let consumerTag: String
  /// The channel it came on, for ack/nack/reject.
  public let channel: AMQPChannel

  /// The body as UTF-8 text.
  public var text: String { String(buffer: self.body) }

  /// Acknowledges this delivery.
  public func ack() async throws { try await self.channel.ack(deliveryTag: self.deliveryTag) }
  /// Negatively acknowledges it, requeued by default.
  public func nack(requeue: Bool = true) async throws {
    try await self.channel.nack(deliveryTag: self.deliveryTag, requeue: requeue)
  }
  /// Rejects it, requeued by default.
  public func reject(requeue: Bool = true) async throws {
    try await self.channel.reject(deliveryTag: self.deliveryTag, requeue: requeue)
  }
}

/// A call waiting for the broker's reply.
enum PendingReply {
  case method(EventLoopPromise<AMQPMethod>)
  case get(EventLoopPromise<Delivery?>)

  func fail(_ error: any Error) {
    switch self {
    case .method(let promise): promise.fail(error)
    case .get(let promise): promise.fail(error)
    }
  }
}

/// A publish waiting for its confirm.
struct PendingConfirm {
  let tag: UInt64
  let promise: EventLoopPromise<Void>
  let exchange: String
  let routingKey: String
  var returned: AMQPClientError? = nil
}

/// One channel's state on the event loop.
final class ClientChannelState {
  var pendingReplies = Deque<PendingReply>()
  var consumers: [String: AsyncThrowingStream<Delivery, any Error>.Continuation] = [:]
  var confirmMode = false
  var publishSequence: UInt64 = 0
  var pendingConfirms = Deque<PendingConfirm>()
  var closedError: AMQPClientError?
  // Content being assembled.
  var contentMethod: AMQPMethod?
  var contentHeader: ContentHeader?
  var contentBody = ByteBuffer()
  weak var publicChannel: AMQPChannel?
}

/// The client side of one connection: handshake, frames to channels, replies to waiting calls.
final class ClientHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  let username: String
  let password: String
  let virtualHost: String
  let heartbeat: UInt16
  let connectionName: String
  let opened: EventLoopPromise<Void>
  var context: ChannelHandlerContext?
  var frameMax = 131_072
  var channels: [UInt16: ClientChannelState] = [:]
  var lastChannelNumber: UInt16 = 0
  var closedError: AMQPClientError?
  var closePromise: EventLoopPromise<Void>?
  private var reader = AMQPFrameReader()
  private var isOpen = false
  private var heartbeatTask: RepeatedTask?
  private var heartbeats = HeartbeatMonitor(seconds: 0)

  init(
    username: String, password: String, virtualHost: String, heartbeat: UInt16, connectionName: String,
    opened: EventLoopPromise<Void>
  ) {
    self.username = username
    self.password = password
    self.virtualHost = virtualHost
    self.heartbeat = heartbeat
    self.connectionName = connectionName
    self.opened = opened
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func channelActive(context: ChannelHandlerContext) {
    var buffer = context.channel.allocator.buffer(capacity: 8)
    buffer.writeBytes(amqpProtocolHeader)
    context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.heartbeatTask?.cancel()
    let error = self.closedError ?? .connectionLost
    if !self.isOpen { self.opened.fail(error) }
    for state in self.channels.values { self.fail(state, error) }
    self.channels.removeAll()
    self.closePromise?.succeed(())
    self.closePromise = nil
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    self.heartbeats.received()
    do {
      try self.reader.read(self.unwrapInboundIn(data)) { self.handle($0, context: context) }
    } catch {
      context.close(promise: nil)
    }
  }

  // MARK: Sending

  func send(_ method: AMQPMethod, channel: UInt16) {
    guard let context else { return }
    var buffer = context.channel.allocator.buffer(capacity: 64)
    buffer.writeAMQPMethodFrame(channel: channel, method)
    self.heartbeats.sent()
    context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
  }

  /// Sends a synchronous method; `reply` is fulfilled with the broker's answer.
  func call(_ method: AMQPMethod, channel: UInt16, reply: PendingReply) {
    guard let state = self.channels[channel] else {
      reply.fail(self.closedError ?? AMQPClientError.connectionLost)
      return
    }
    if let error = state.closedError ?? self.closedError {
      reply.fail(error)
      return
    }
    state.pendingReplies.append(reply)
    self.send(method, channel: channel)
  }

  func call(_ method: AMQPMethod, channel: UInt16, promise: EventLoopPromise<AMQPMethod>) {
    self.call(method, channel: channel, reply: .method(promise))
  }

  func publish(
    channel: UInt16, exchange: String, routingKey: String, body: ByteBuffer, properties: BasicProperties,
    mandatory: Bool
  ) throws -> (UInt64, ClientChannelState)? {
    guard let context, let state = self.channels[channel] else { throw self.closedError ?? .connectionLost }
    if let error = state.closedError ?? self.closedError { throw error }
    var buffer = context.channel.allocator.buffer(capacity: 128 + body.readableBytes)
    buffer.writeAMQPMethodFrame(
      channel: channel, .basicPublish(BasicPublish(exchange: exchange, routingKey: routingKey, mandatory: mandatory)))
    var raw = ByteBuffer()
    properties.encode(into: &raw)
    buffer.writeAMQPContentHeaderFrame(channel: channel, bodySize: UInt64(body.readableBytes), rawProperties: raw)
    buffer.writeAMQPBodyFrames(channel: channel, body: body, maxFrameSize: self.frameMax)
    self.heartbeats.sent()
    context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
    guard state.confirmMode else { return nil }
    state.publishSequence += 1
    return (state.publishSequence, state)
  }

  // MARK: Receiving

  private func handle(_ frame: Frame, context: ChannelHandlerContext) {
    switch frame {
    case .protocolHeader:
      break
    case .heartbeat:
      break
    case .method(0, let method):
      self.connectionMethod(method, context: context)
    case .method(let number, let method):
      guard let state = self.channels[number] else { return }
      self.channelMethod(method, number: number, state: state)
    case .header(let number, let header):
      guard let state = self.channels[number] else { return }
      state.contentHeader = header
      state.contentBody = ByteBuffer()
      if header.bodySize == 0 { self.contentComplete(number: number, state: state) }
    case .body(let number, var part):
      guard let state = self.channels[number], let header = state.contentHeader else { return }
      state.contentBody.writeBuffer(&part)
      if state.contentBody.readableBytes >= Int(header.bodySize) { self.contentComplete(number: number, state: state) }
    }
  }

  private func connectionMethod(_ method: AMQPMethod, context: ChannelHandlerContext) {
    switch method {
    case .connectionStart:
      let response = [0] + Array(self.username.utf8) + [0] + Array(self.password.utf8)
      self.send(
        .connectionStartOk(
          ConnectionStartOk(
            clientProperties: [
              "product": .longString("WarrenClient"),
              "platform": .longString("Swift"),
              "connection_name": .longString(self.connectionName),
              "capabilities": .table([
                "publisher_confirms": .bool(true), "consumer_cancel_notify": .bool(true),
                "basic.nack": .bool(true), "authentication_failure_close": .bool(true),
                "exchange_exchange_bindings": .bool(true),
              ]),
            ], mechanism: "PLAIN", response: response)), channel: 0)
    case .connectionTune(let tune):
      self.frameMax = Int(tune.frameMax == 0 ? 131_072 : tune.frameMax)
      let heartbeat = tune.heartbeat == 0 ? self.heartbeat : min(tune.heartbeat, self.heartbeat)
      self.send(
        .connectionTuneOk(
          ConnectionTuneOk(channelMax: tune.channelMax, frameMax: UInt32(self.frameMax), heartbeat: heartbeat)),
        channel: 0)
      self.send(.connectionOpen(ConnectionOpen(virtualHost: self.virtualHost)), channel: 0)
      self.startHeartbeats(seconds: Int(heartbeat), context: context)
    case .connectionOpenOk:
      self.isOpen = true
      self.opened.succeed(())
    case .connectionClose(let close):
      self.closedError = .connectionClosed(replyCode: close.replyCode, replyText: close.replyText)
      self.send(.connectionCloseOk(ConnectionCloseOk()), channel: 0)
      context.close(promise: nil)
    case .connectionCloseOk:
      context.close(promise: nil)
    default:
      break
    }
  }

  private func channelMethod(_ method: AMQPMethod, number: UInt16, state: ClientChannelState) {
    switch method {
    case .basicDeliver, .basicGetOk, .basicReturn:
      state.contentMethod = method
    case .basicAck(let ack):
      self.settleConfirms(state, upTo: ack.deliveryTag, multiple: ack.multiple, error: nil)
    case .basicNack(let nack):
      self.settleConfirms(state, upTo: nack.deliveryTag, multiple: nack.multiple, error: .publishNacked)
    case .basicCancel(let cancel):
      state.consumers.removeValue(forKey: cancel.consumerTag)?.finish()
    case .channelClose(let close):
      self.send(.channelCloseOk(ChannelCloseOk()), channel: number)
      self.fail(state, .channelClosed(replyCode: close.replyCode, replyText: close.replyText))
    case .channelFlow(let flow):
      self.send(.channelFlowOk(ChannelFlowOk(active: flow.active)), channel: number)
    case .basicGetEmpty:
      if case .get(let promise) = state.pendingReplies.popFirst() { promise.succeed(nil) }
    default:
      // A reply to the oldest waiting call.
      if case .method(let promise) = state.pendingReplies.popFirst() { promise.succeed(method) }
      if case .channelCloseOk = method { self.channels[number] = nil }
    }
  }

  private func contentComplete(number: UInt16, state: ClientChannelState) {
    guard let method = state.contentMethod, let header = state.contentHeader else { return }
    state.contentMethod = nil
    state.contentHeader = nil
    let body = state.contentBody
    state.contentBody = ByteBuffer()
    if case .basicReturn(let returned) = method {
      // The broker returns before it confirms: the oldest waiting publish with this exchange and key fails.
      if let index = state.pendingConfirms.firstIndex(where: {
        $0.returned == nil && $0.exchange == returned.exchange && $0.routingKey == returned.routingKey
      }) {
        state.pendingConfirms[index].returned = .unroutable(
          replyCode: returned.replyCode, replyText: returned.replyText)
      }
      return
    }
    guard let channel = state.publicChannel else { return }
    switch method {
    case .basicDeliver(let deliver):
      let delivery = Delivery(
        body: body, properties: header.properties, deliveryTag: deliver.deliveryTag, redelivered: deliver.redelivered,
        exchange: deliver.exchange, routingKey: deliver.routingKey, consumerTag: deliver.consumerTag, channel: channel)
      state.consumers[deliver.consumerTag]?.yield(delivery)
    case .basicGetOk(let getOk):
      let delivery = Delivery(
        body: body, properties: header.properties, deliveryTag: getOk.deliveryTag, redelivered: getOk.redelivered,
        exchange: getOk.exchange, routingKey: getOk.routingKey, consumerTag: "", channel: channel)
      if case .get(let promise) = state.pendingReplies.popFirst() { promise.succeed(delivery) }
    default:
      break
    }
  }

  private func settleConfirms(_ state: ClientChannelState, upTo tag: UInt64, multiple: Bool, error: AMQPClientError?) {
    func settle(_ entry: PendingConfirm) {
      if let error = error ?? entry.returned { entry.promise.fail(error) } else { entry.promise.succeed(()) }
    }
    if multiple {
      while let first = state.pendingConfirms.first, first.tag <= tag { settle(state.pendingConfirms.removeFirst()) }
    } else if let index = state.pendingConfirms.firstIndex(where: { $0.tag == tag }) {
      settle(state.pendingConfirms.remove(at: index))
    }
  }

  private func fail(_ state: ClientChannelState, _ error: AMQPClientError) {
    state.closedError = error
    while let reply = state.pendingReplies.popFirst() { reply.fail(error) }
    while let confirm = state.pendingConfirms.popFirst() { confirm.promise.fail(error) }
    for continuation in state.consumers.values { continuation.finish(throwing: error) }
    state.consumers.removeAll()
  }

  private func startHeartbeats(seconds: Int, context: ChannelHandlerContext) {
    self.heartbeats = HeartbeatMonitor(seconds: seconds)
    guard seconds > 0 else { return }
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    let tick = self.heartbeats.tickInterval
    self.heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
      let handler = bound.value
      guard let context = handler.context else { return }
      switch handler.heartbeats.tick() {
      case .none:
        break
      case .sendHeartbeat:
        var buffer = context.channel.allocator.buffer(capacity: 8)
        buffer.writeAMQPHeartbeatFrame()
        context.writeAndFlush(handler.wrapOutboundOut(buffer), promise: nil)
        handler.heartbeats.heartbeatWritten()
      case .peerTimedOut:
        context.close(promise: nil)
      }
    }
  }
}
