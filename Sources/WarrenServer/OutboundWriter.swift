import AMQPProtocol
import NIOCore
import WarrenCore

/// The bytes a connection will send: replies, deliveries and confirms written by its channels into one buffer,
/// flushed once per read batch by the ``BrokerRuntime`` (one write and one flush per connection per batch).
final class OutboundWriter {
  let runtime: BrokerRuntime
  /// Set while the handler is in a pipeline.
  var context: ChannelHandlerContext?
  private var buffer = ByteBuffer()
  /// The negotiated frame_max: bodies are cut into frames of at most this size.
  var frameMax = 131_072
  /// Whether it waits in the runtime's list of connections to flush.
  var isDirty = false
  /// Bytes handed to the socket (for the metrics endpoint).
  private(set) var bytesSent = 0
  /// Whether anything was flushed since the heartbeat monitor last looked.
  var flushedSinceTick = false

  init(runtime: BrokerRuntime) {
    self.runtime = runtime
  }

  /// Bytes written and not yet handed to the socket.
  var pendingBytes: Int { self.buffer.readableBytes }

  /// Writes a method frame.
  func writeMethod(channel: UInt16, _ method: AMQPMethod) {
    self.buffer.writeAMQPMethodFrame(channel: channel, method)
    self.runtime.markDirty(self)
  }

  /// Writes a basic.deliver with its content: the delivery hot path, straight from the message's bytes.
  @inline(__always)
  func writeDelivery(channel: UInt16, consumerTag: [UInt8], deliveryTag: UInt64, redelivered: Bool, message: Message) {
    let frameMax = self.frameMax
    consumerTag.withUnsafeBytes { tag in
      message.withBytes { exchange, routingKey, properties, body in
        self.buffer.writeAMQPDelivery(
          channel: channel, consumerTag: tag, deliveryTag: deliveryTag, redelivered: redelivered,
          exchange: exchange, routingKey: routingKey, properties: properties, body: body, maxFrameSize: frameMax)
      }
    }
    self.runtime.markDirty(self)
  }

  /// Writes a method with content (get-ok, return).
  func writeContent(channel: UInt16, _ method: AMQPMethod, message: Message) {
    self.buffer.writeAMQPMethodFrame(channel: channel, method)
    let frameMax = self.frameMax
    message.withBytes { _, _, properties, body in
      self.buffer.writeAMQPContentHeaderFrame(channel: channel, bodySize: UInt64(body.count), rawProperties: properties)
      self.buffer.writeAMQPBodyFrames(channel: channel, body: body, maxFrameSize: frameMax)
    }
    self.runtime.markDirty(self)
  }

  /// Writes a heartbeat frame.
  func writeHeartbeat() {
    self.buffer.writeAMQPHeartbeatFrame()
  }

  /// Writes raw bytes (the protocol header answering a wrong one).
  func writeBytes(_ bytes: [UInt8]) {
    self.buffer.writeBytes(bytes)
  }

  /// Hands what was written to the socket.
  func flush() {
    guard let context, self.buffer.readableBytes > 0 else { return }
    self.flushedSinceTick = true
    let buffer = self.buffer
    self.bytesSent &+= buffer.readableBytes
    // A busy connection gets a buffer as large as its last batch; a quiet one holds no memory until it writes.
    self.buffer =
      buffer.readableBytes > 16384
      ? context.channel.allocator.buffer(capacity: min(buffer.readableBytes, 1 << 18)) : ByteBuffer()
    context.writeAndFlush(NIOAny(buffer), promise: nil)
  }

  /// Hands what was written to the socket, then closes it.
  func flushAndClose() {
    guard let context else { return }
    let buffer = self.buffer
    self.bytesSent &+= buffer.readableBytes
    self.buffer.clear()
    let channel = context.channel
    context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in channel.close(promise: nil) }
  }
}
