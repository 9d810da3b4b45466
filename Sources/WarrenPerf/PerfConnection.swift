import AMQPProtocol
import NIOCore

/// Errors of the load generator.
public enum PerfError: Error, CustomStringConvertible {
  case badURI(String)
  case closedByBroker(UInt16, String)
  case unexpected(String)

  public var description: String {
    switch self {
    case .badURI(let uri): return "bad AMQP URI: \(uri)"
    case .closedByBroker(let code, let text): return "closed by broker: \(code) \(text)"
    case .unexpected(let what): return "unexpected: \(what)"
    }
  }
}

/// What a connection does once its channel 1 is open.
protocol PerfRole: AnyObject {
  /// Channel 1 is open.
  func started(_ connection: PerfConnection, context: ChannelHandlerContext)
  /// A frame other than the handshake's.
  func received(_ frame: Frame, _ connection: PerfConnection, context: ChannelHandlerContext)
  /// A socket read finished.
  func readComplete(_ connection: PerfConnection, context: ChannelHandlerContext)
  /// The socket can take more.
  func writable(_ connection: PerfConnection, context: ChannelHandlerContext)
}

extension PerfRole {
  func readComplete(_ connection: PerfConnection, context: ChannelHandlerContext) {}
  func writable(_ connection: PerfConnection, context: ChannelHandlerContext) {}
}

/// A lean AMQP client connection for load generation: handshake, channel 1, then a role drives it.
final class PerfConnection: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  let endpoint: AMQPURL
  let role: any PerfRole
  let ready: EventLoopPromise<Void>
  var frameMax = 131_072
  private var reader = AMQPFrameReader()
  private var isReady = false

  init(endpoint: AMQPURL, role: any PerfRole, ready: EventLoopPromise<Void>) {
    self.endpoint = endpoint
    self.role = role
    self.ready = ready
  }

  func channelActive(context: ChannelHandlerContext) {
    var buffer = context.channel.allocator.buffer(capacity: 8)
    buffer.writeBytes(amqpProtocolHeader)
    context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if !self.isReady { self.ready.fail(PerfError.unexpected("connection closed during the handshake")) }
  }

  func send(_ method: AMQPMethod, channel: UInt16 = 1, context: ChannelHandlerContext) {
    var buffer = context.channel.allocator.buffer(capacity: 64)
    buffer.writeAMQPMethodFrame(channel: channel, method)
    context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    do {
      try self.reader.read(self.unwrapInboundIn(data)) { self.handle($0, context: context) }
    } catch {
      context.fireErrorCaught(error)
      context.close(promise: nil)
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    if self.isReady { self.role.readComplete(self, context: context) }
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if self.isReady && context.channel.isWritable { self.role.writable(self, context: context) }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if !self.isReady { self.ready.fail(error) }
    context.close(promise: nil)
  }

  private func handle(_ frame: Frame, context: ChannelHandlerContext) {
    switch frame {
    case .method(0, .connectionStart):
      let response = [0] + Array(self.endpoint.username.utf8) + [0] + Array(self.endpoint.password.utf8)
      self.send(
        .connectionStartOk(
          ConnectionStartOk(
            clientProperties: [
              "product": .longString("warren perf"),
              "capabilities": .table(["consumer_cancel_notify": .bool(true), "basic.nack": .bool(true)]),
            ], mechanism: "PLAIN", response: response)), channel: 0, context: context)
    case .method(0, .connectionTune(let tune)):
      self.frameMax = Int(tune.frameMax == 0 ? 131_072 : tune.frameMax)
      self.send(
        .connectionTuneOk(ConnectionTuneOk(channelMax: tune.channelMax, frameMax: tune.frameMax, heartbeat: 0)),
        channel: 0, context: context)
      self.send(.connectionOpen(ConnectionOpen(virtualHost: self.endpoint.virtualHost)), channel: 0, context: context)
    case .method(0, .connectionOpenOk):
      self.send(.channelOpen(ChannelOpen()), channel: 1, context: context)
    case .method(1, .channelOpenOk):
      self.isReady = true
      self.ready.succeed(())
      self.role.started(self, context: context)
    case .method(0, .connectionClose(let close)):
      self.send(.connectionCloseOk(ConnectionCloseOk()), channel: 0, context: context)
      let error = PerfError.closedByBroker(close.replyCode, close.replyText)
      if !self.isReady { self.ready.fail(error) }
      context.fireErrorCaught(error)
      context.close(promise: nil)
    case .method(1, .channelClose(let close)):
      let error = PerfError.closedByBroker(close.replyCode, close.replyText)
      if !self.isReady { self.ready.fail(error) }
      context.fireErrorCaught(error)
      context.close(promise: nil)
    case .heartbeat:
      break
    default:
      self.role.received(frame, self, context: context)
    }
  }
}
