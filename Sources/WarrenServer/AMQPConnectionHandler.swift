import AMQPProtocol
import Logging
import NIOCore
import WarrenCore
import WarrenMetrics

/// One client connection: decodes frames from each socket read, drives the connection and channel state
/// machines, calls into the broker, and writes replies and deliveries into one outbound buffer per batch.
final class AMQPConnectionHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  let runtime: BrokerRuntime
  let id: UInt64
  var logger: Logger
  var machine: ConnectionStateMachine
  var decoder = AMQPFrameDecoder(maxFrameSize: 131_072, expectsProtocolHeader: true)
  var inbound: ByteBuffer?
  var channels: [UInt16: ServerChannel] = [:]
  private var lastChannelNumber: UInt16 = 0
  private var lastChannel: ServerChannel?
  var vhost: VirtualHost?
  var outbound = ByteBuffer()
  var isDirty = false
  var isWritable = true
  var frameMax = 131_072
  var context: ChannelHandlerContext?
  private var stopDecoding = false
  private var receivedSinceTick = false
  private var sentSinceTick = false
  private var silentTicks = 0
  private var heartbeatTask: RepeatedTask?
  private var handshakeTimeout: Scheduled<Void>?
  private var closeTimeout: Scheduled<Void>?
  private var remoteIsLoopback = false
  private var tornDown = false
  /// A queue asked this publisher to wait (flow control).
  private var throttled = false
  private var readingPaused = false
  /// A resource alarm stopped reading from this publishing connection.
  private var readingPausedByAlarm = false
  /// connection.blocked was sent and connection.unblocked is owed.
  private var blockedNotified = false
  private var resumeTimer: Scheduled<Void>?
  /// Messages published during the current read.
  var publishesThisRead = 0
  /// Bytes received from and sent to the client (for the metrics endpoint).
  private(set) var bytesReceived = 0
  private(set) var bytesSent = 0
  /// When bytes last arrived.
  private(set) var lastReadAt = NIODeadline.now()
  /// The peer's and the listener's addresses, RabbitMQ's connection name ("127.0.0.1:54321 -> 127.0.0.1:5672").
  private(set) var name = ""
  /// Only publishers that send at least this many messages per read are held back: one waiting for each
  /// confirm is never flooding anything.
  static let bulkPublishesPerRead = 64
  /// The longest a held-back publisher waits before it reads again.
  static let longestPause = TimeAmount.milliseconds(50)

  init(runtime: BrokerRuntime) {
    self.runtime = runtime
    self.id = runtime.broker.nextConnectionID()
    self.logger = runtime.logger
    self.logger[metadataKey: "connection"] = "\(self.id)"
    self.machine = ConnectionStateMachine(limits: runtime.broker.limits, serverProperties: runtime.serverProperties)
  }

  var broker: Broker { self.runtime.broker }

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    self.notePeer(context)
    self.runtime.connections[self.id] = self
    self.broker.counters.values.connectionsOpened += 1
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    self.handshakeTimeout = context.eventLoop.scheduleTask(in: .seconds(10)) {
      let handler = bound.value
      guard !handler.machine.isOpen else { return }
      handler.logger.warning("closing connection: handshake not completed within 10 s")
      handler.context?.close(promise: nil)
    }
  }

  func channelActive(context: ChannelHandlerContext) {
    self.notePeer(context)
    context.fireChannelActive()
  }

  private func notePeer(_ context: ChannelHandlerContext) {
    guard let remote = context.channel.remoteAddress else { return }
    self.name =
      "\(remote.ipAddress ?? "?"):\(remote.port ?? 0) -> "
      + "\(context.channel.localAddress?.ipAddress ?? "?"):\(context.channel.localAddress?.port ?? 0)"
    self.logger[metadataKey: "peer"] = "\(remote)"
    let ip = remote.ipAddress ?? ""
    self.remoteIsLoopback = ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.teardown()
    self.context = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.teardown()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !self.stopDecoding else { return }
    self.runtime.readStarted()
    self.receivedSinceTick = true
    var buffer = self.unwrapInboundIn(data)
    self.bytesReceived &+= buffer.readableBytes
    self.lastReadAt = .now()
    do {
      // A frame cut by the previous read: complete it with just the bytes it lacks, so the rest of this read is
      // decoded in place and never copied.
      if var pending = self.inbound {
        self.inbound = nil
        if self.decoder.expectsProtocolHeader {
          pending.writeBuffer(&buffer)
          buffer = pending
        } else {
          while buffer.readableBytes > 0 {
            let needed: Int
            if pending.readableBytes < 7 {
              needed = 7 - pending.readableBytes
            } else {
              let size = Int(pending.getInteger(at: pending.readerIndex + 3, as: UInt32.self)!)
              if self.decoder.maxFrameSize > 0 && size + 8 > self.decoder.maxFrameSize {
                needed = 0  // let the decoder report the oversized frame
              } else {
                needed = size + 8 - pending.readableBytes
              }
            }
            if needed == 0 { break }
            var part = buffer.readSlice(length: min(needed, buffer.readableBytes))!
            pending.writeBuffer(&part)
            if needed > part.readableBytes && buffer.readableBytes == 0 { break }
          }
          while !self.stopDecoding, let frame = try self.decoder.decodeFrame(&pending) {
            self.handleFrame(frame)
          }
          if pending.readableBytes > 0 {
            // Still incomplete: this read held less than the frame's remainder.
            self.inbound = pending
            return
          }
        }
      }
      while !self.stopDecoding {
        if try self.decodePublishFrame(&buffer) { continue }
        guard let frame = try self.decoder.decodeFrame(&buffer) else { break }
        self.handleFrame(frame)
      }
    } catch {
      self.logger.warning("closing connection: \(error)")
      self.stopDecoding = true
      self.closeWithError(BrokerError(replyCode: error.replyCode, replyText: error.description))
    }
    if buffer.readableBytes > 0 && !self.stopDecoding {
      // Keep only the partial frame, in a buffer of its own (not a slice that pins this whole read).
      var rest = ByteBuffer()
      rest.reserveCapacity(max(buffer.readableBytes, 4096))
      rest.writeBuffer(&buffer)
      self.inbound = rest
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    for channel in self.channels.values { channel.flushConfirms() }
    if self.runtime.alarms.any && self.publishesThisRead > 0 && !self.readingPausedByAlarm {
      // A resource alarm is in effect: a connection that publishes is told (connection.blocked) and not read until
      // it clears, as RabbitMQ blocks publishers. What this read held is routed and confirmed; nothing is dropped.
      // Connections that only consume go on.
      self.readingPausedByAlarm = true
      context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
      if self.machine.clientSupportsConnectionBlocked && !self.blockedNotified {
        self.blockedNotified = true
        self.writeMethod(channel: 0, .connectionBlocked(ConnectionBlocked(reason: self.runtime.alarmReason)))
      }
    }
    if self.throttled && !self.readingPaused && self.publishesThisRead >= Self.bulkPublishesPerRead {
      // A queue this connection floods is behind its consumers: stop reading until it catches up, or for
      // a bounded time (a consumer that stopped reading must not stop the publisher for good).
      self.readingPaused = true
      context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
      let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
      self.resumeTimer = context.eventLoop.scheduleTask(in: Self.longestPause) { bound.value.resumePublishing() }
    }
    self.throttled = false
    self.publishesThisRead = 0
    self.runtime.readCompleted()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    self.isWritable = context.channel.isWritable
    if self.isWritable {
      for channel in self.channels.values { channel.resumeDeliveries() }
    }
    context.fireChannelWritabilityChanged()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    self.logger.debug("connection error: \(error)")
    context.close(promise: nil)
  }

  // MARK: Frames

  private func handleFrame(_ frame: Frame) {
    switch frame {
    case .protocolHeader(let bytes):
      self.perform(self.machine.protocolHeaderReceived(bytes))
    case .heartbeat(let channel):
      if channel != 0 {
        self.connectionError(.unexpectedFrame("heartbeat frame on channel \(channel)"))
      }
    case .method(0, let method):
      self.perform(self.machine.methodReceived(method))
    case .method(let number, let method):
      guard let channel = self.channelForFrame(number, method: method) else { return }
      channel.methodReceived(method)
    case .header(let number, let header):
      guard number != 0 else {
        return self.connectionError(.unexpectedFrame("content header frame on channel 0"))
      }
      guard let channel = self.channelForFrame(number, method: nil) else { return }
      channel.headerReceived(header)
    case .body(let number, let body):
      guard number != 0 else {
        return self.connectionError(.unexpectedFrame("content body frame on channel 0"))
      }
      guard let channel = self.channelForFrame(number, method: nil) else { return }
      channel.bodyReceived(body)
    }
  }

  /// The fast path for the three frames of a publish (basic.publish, content header, body) on the channel of the
  /// frame before: decoded and handed to the channel without building a ``Frame``. Anything else, anything
  /// incomplete or malformed, is left to the general decoder (which reports errors).
  @inline(__always)
  private func decodePublishFrame(_ buffer: inout ByteBuffer) throws(AMQPProtocolError) -> Bool {
    guard let channel = self.lastChannel, buffer.readableBytes >= 8, self.machine.isOpen else { return false }
    let start = buffer.readerIndex
    guard let type = buffer.getInteger(at: start, as: UInt8.self),
      let number = buffer.getInteger(at: start + 1, as: UInt16.self),
      let size32 = buffer.getInteger(at: start + 3, as: UInt32.self)
    else { return false }
    let size = Int(size32)
    guard number == self.lastChannelNumber, size + 8 <= self.decoder.maxFrameSize || self.decoder.maxFrameSize == 0,
      buffer.readableBytes >= size + 8, buffer.getInteger(at: start + 7 + size, as: UInt8.self) == amqpFrameEnd
    else { return false }
    switch type {
    case 3:
      let body = buffer.getSlice(at: start + 7, length: size)!
      buffer.moveReaderIndex(forwardBy: size + 8)
      channel.bodyReceived(body)
      return true
    case 2:
      guard size >= 14, let classID = buffer.getInteger(at: start + 7, as: UInt16.self),
        let bodySize = buffer.getInteger(at: start + 11, as: UInt64.self)
      else { return false }
      let properties = buffer.getSlice(at: start + 19, length: size - 12)!
      try BasicProperties.validate(properties)
      buffer.moveReaderIndex(forwardBy: size + 8)
      channel.headerReceived(ContentHeader(classID: classID, bodySize: bodySize, rawProperties: properties))
      return true
    case 1:
      guard size >= 4, buffer.getInteger(at: start + 7, as: UInt32.self) == 0x003C_0028 else { return false }
      var arguments = buffer.getSlice(at: start + 11, length: size - 4)!
      let publish = try BasicPublish(from: &arguments)
      buffer.moveReaderIndex(forwardBy: size + 8)
      channel.publishReceived(publish)
      return true
    default:
      return false
    }
  }

  /// The open channel a frame belongs to; opens one on channel.open; raises the connection errors RabbitMQ does.
  private func channelForFrame(_ number: UInt16, method: AMQPMethod?) -> ServerChannel? {
    // Frames mostly come on the channel of the frame before: skip the lookup.
    if number == self.lastChannelNumber, let channel = self.lastChannel, self.machine.isOpen {
      if case .channelOpen = method {
      } else {
        return channel
      }
    }
    switch self.machine.state {
    case .open:
      break
    case .closing, .closed:
      return nil
    default:
      self.connectionError(.commandInvalid("frame on channel \(number) before the connection is open"))
      return nil
    }
    if let channel = self.channels[number] {
      self.lastChannelNumber = number
      self.lastChannel = channel
      if case .channelOpen = method {
        if channel.machine.isClosing { return nil }
        self.connectionError(.channelError("second 'channel.open' seen"), classID: 20, methodID: 10)
        return nil
      }
      return channel
    }
    switch method {
    case .channelOpen:
      break
    case .channelCloseOk:
      return nil  // a late answer for a channel already gone
    default:
      self.connectionError(
        .channelError("expected 'channel.open' on channel \(number)"), classID: method?.classID ?? 0,
        methodID: method?.methodID ?? 0)
      return nil
    }
    if number > self.machine.tuning.channelMax {
      self.connectionError(
        .notAllowed("channel number \(number) exceeds channel_max \(self.machine.tuning.channelMax)"),
        classID: 20, methodID: 10)
      return nil
    }
    let channel = ServerChannel(number: number, connection: self)
    self.channels[number] = channel
    self.broker.counters.values.channelsOpened += 1
    self.writeMethod(channel: number, .channelOpenOk(ChannelOpenOk()))
    return nil
  }

  // MARK: Connection actions

  private func perform(_ action: ConnectionStateMachine.Action) {
    switch action {
    case .none:
      break
    case .send(let method):
      self.writeMethod(channel: 0, method)
    case .sendProtocolHeaderAndClose:
      self.logger.info("closing connection: bad protocol header")
      self.outbound.writeBytes(amqpProtocolHeader)
      self.stopDecoding = true
      self.flushAndClose()
    case .authenticate(let mechanism, let username, let password):
      let user = self.broker.authenticate(user: username, password: password, fromLoopback: self.remoteIsLoopback)
      if user == nil {
        self.broker.counters.values.authAttemptsFailed += 1
      } else {
        self.broker.counters.values.authAttemptsSucceeded += 1
      }
      if user == nil {
        self.logger.warning(
          "login refused for user '\(username)' with mechanism \(mechanism)\(self.remoteIsLoopback ? "" : " (remote connection)")"
        )
      }
      self.perform(self.machine.authenticated(user?.name))
    case .applyTuning(let tuning):
      self.frameMax = Int(tuning.frameMax)
      self.decoder.maxFrameSize = Int(tuning.frameMax)
      self.startHeartbeats(seconds: Int(tuning.heartbeat))
    case .openVirtualHost(let name):
      var error: BrokerError?
      let user = self.machine.username ?? ""
      if let vhost = self.broker.vhosts[name] {
        if self.broker.mayOpen(virtualHost: name, user: user) {
          self.vhost = vhost
        } else {
          error = .notAllowed("access to vhost '\(name)' refused for user '\(user)'")
        }
      } else {
        error = .notAllowed("vhost \(name) not found")
      }
      self.perform(self.machine.virtualHostOpened(name, error: error))
      if error == nil {
        self.handshakeTimeout?.cancel()
        self.logger.info(
          "connection open: user '\(self.machine.username ?? "")', vhost '\(name)'",
          metadata: ["client": "\(self.clientName)"])
      } else {
        self.logger.warning("closing connection: \(error!)")
      }
    case .sendClose(let error, let classID, let methodID):
      self.writeMethod(
        channel: 0,
        .connectionClose(
          ConnectionClose(
            replyCode: error.replyCode, replyText: error.replyText, classID: classID, methodID: methodID)))
      self.closeChannelsForConnectionClose()
      if let context {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.closeTimeout = context.eventLoop.scheduleTask(in: .seconds(5)) { bound.value.context?.close(promise: nil) }
      }
    case .sendCloseOkAndClose:
      self.closeChannelsForConnectionClose()  // consumers gone and deliveries requeued before close-ok
      self.writeMethod(channel: 0, .connectionCloseOk(ConnectionCloseOk()))
      self.stopDecoding = true
      self.flushAndClose()
    case .closeSocket:
      self.stopDecoding = true
      self.flushAndClose()
    case .sendCloseAndCloseSocket(let error):
      self.writeMethod(
        channel: 0,
        .connectionClose(
          ConnectionClose(replyCode: error.replyCode, replyText: error.replyText, classID: 10, methodID: 11)))
      self.stopDecoding = true
      self.flushAndClose()
    }
  }

  private var clientName: String {
    self.machine.clientProperties["connection_name"]?.stringValue
      ?? self.machine.clientProperties["product"]?.stringValue ?? "unknown"
  }

  /// Closes the connection with a hard error (connection.close, then wait for close-ok).
  func connectionError(_ error: BrokerError, classID: UInt16 = 0, methodID: UInt16 = 0) {
    self.logger.warning("closing connection: \(error)")
    self.perform(self.machine.connectionError(error, classID: classID, methodID: methodID))
  }

  private func closeWithError(_ error: BrokerError) {
    self.perform(self.machine.connectionError(error))
    self.flushAndClose()
  }

  /// Closes with 320 CONNECTION_FORCED (broker shutdown).
  func forceClose(reason: String) {
    self.perform(self.machine.shutdown(reason: reason))
    self.runtime.markDirty(self)
  }

  /// Whether a publish may still be arriving: part of a frame is buffered, a channel awaits a publish's content, or
  /// bytes arrived within `quietPeriod`.
  func mayBePublishing(quietPeriod: TimeAmount) -> Bool {
    guard self.machine.isOpen, !self.stopDecoding else { return false }
    if self.inbound != nil || self.channels.values.contains(where: { $0.isReceivingContent }) { return true }
    return self.lastReadAt + quietPeriod > .now()
  }

  /// Cancels every consumer of every channel (the broker is shutting down).
  func cancelConsumersForShutdown() {
    for channel in self.channels.values { channel.cancelConsumersForShutdown() }
  }

  // MARK: Heartbeats

  private func startHeartbeats(seconds: Int) {
    guard seconds > 0, let context else { return }
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    // Tick at half the interval: send a heartbeat when nothing else was sent; give up after two silent intervals.
    let tick = TimeAmount.milliseconds(Int64(seconds) * 500)
    self.heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
      bound.value.heartbeatTick(seconds: seconds)
    }
  }

  private func heartbeatTick(seconds: Int) {
    if self.receivedSinceTick || self.readingPausedByAlarm {
      // A client blocked by an alarm is not read, so its heartbeats are not seen: it is not silent.
      self.receivedSinceTick = false
      self.silentTicks = 0
    } else {
      self.silentTicks += 1
      if self.silentTicks >= 4 {
        self.logger.warning("closing connection: missed heartbeats from client, timeout: \(seconds)s")
        self.stopDecoding = true
        self.context?.close(promise: nil)
        return
      }
    }
    if !self.sentSinceTick {
      self.outbound.writeAMQPHeartbeatFrame()
      self.flushOutbound()
    }
    self.sentSinceTick = false
  }

  // MARK: Output

  /// Writes a method frame into the outbound buffer.
  func writeMethod(channel: UInt16, _ method: AMQPMethod) {
    self.outbound.writeAMQPMethodFrame(channel: channel, method)
    self.runtime.markDirty(self)
  }

  /// Writes a basic.deliver with its content into the outbound buffer: the delivery hot path, straight from the
  /// message's bytes.
  @inline(__always)
  func writeDelivery(
    channel: UInt16, consumerTag: [UInt8], deliveryTag: UInt64, redelivered: Bool, message: Message
  ) {
    let frameMax = self.frameMax
    consumerTag.withUnsafeBytes { tag in
      message.withBytes { exchange, routingKey, properties, body in
        self.outbound.writeAMQPDelivery(
          channel: channel, consumerTag: tag, deliveryTag: deliveryTag, redelivered: redelivered,
          exchange: exchange, routingKey: routingKey, properties: properties, body: body, maxFrameSize: frameMax)
      }
    }
    self.runtime.markDirty(self)
  }

  /// Writes a method with content (get-ok, return) into the outbound buffer.
  func writeContent(channel: UInt16, _ method: AMQPMethod, message: Message) {
    self.outbound.writeAMQPMethodFrame(channel: channel, method)
    let frameMax = self.frameMax
    message.withBytes { _, _, properties, body in
      self.outbound.writeAMQPContentHeaderFrame(
        channel: channel, bodySize: UInt64(body.count), rawProperties: properties)
      self.outbound.writeAMQPBodyFrames(channel: channel, body: body, maxFrameSize: frameMax)
    }
    self.runtime.markDirty(self)
  }

  func flushOutbound() {
    guard let context, self.outbound.readableBytes > 0 else { return }
    self.sentSinceTick = true
    let buffer = self.outbound
    self.bytesSent &+= buffer.readableBytes
    // A busy connection gets a buffer as large as its last batch; a quiet one holds no memory until it writes.
    self.outbound =
      buffer.readableBytes > 16384
      ? context.channel.allocator.buffer(capacity: min(buffer.readableBytes, 1 << 18)) : ByteBuffer()
    context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
  }

  private func flushAndClose() {
    guard let context else { return }
    let buffer = self.outbound
    self.bytesSent &+= buffer.readableBytes
    self.outbound.clear()
    let channel = context.channel
    context.writeAndFlush(self.wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
  }

  // MARK: Teardown

  private func closeChannelsForConnectionClose() {
    for channel in self.channels.values { channel.release() }
    self.broker.counters.values.channelsClosed += self.channels.count
    self.channels.removeAll()
    self.lastChannel = nil
  }

  /// Releases everything the connection held: consumers, unacked deliveries (requeued), exclusive queues.
  private func teardown() {
    guard !self.tornDown else { return }
    self.tornDown = true
    self.heartbeatTask?.cancel()
    self.resumeTimer?.cancel()
    self.handshakeTimeout?.cancel()
    self.closeTimeout?.cancel()
    self.closeChannelsForConnectionClose()
    self.vhost?.removeExclusiveQueues(of: self.id)
    self.runtime.connections[self.id] = nil
    self.broker.counters.values.connectionsClosed += 1
    if self.vhost != nil {
      self.logger.info("connection closed")
    }
    self.runtime.flushDirty()
  }

  func channelClosed(_ number: UInt16) {
    if self.channels.removeValue(forKey: number) != nil { self.broker.counters.values.channelsClosed += 1 }
    if number == self.lastChannelNumber {
      self.lastChannel = nil
    }
  }
}

extension AMQPConnectionHandler: FlowControlledPublisher {
  func holdBackPublishing() {
    self.throttled = true
  }

  func resumePublishing() {
    guard self.readingPaused, let context else { return }
    self.readingPaused = false
    self.resumeTimer?.cancel()
    self.resumeTimer = nil
    if !self.readingPausedByAlarm {
      context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }
  }

  /// The resource alarms cleared: a blocked publisher is told (connection.unblocked) and read again.
  func resourceAlarmsCleared() {
    guard let context else { return }
    if self.blockedNotified {
      self.blockedNotified = false
      self.writeMethod(channel: 0, .connectionUnblocked(ConnectionUnblocked()))
    }
    if self.readingPausedByAlarm {
      self.readingPausedByAlarm = false
      if !self.readingPaused {
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
      }
    }
  }
}
