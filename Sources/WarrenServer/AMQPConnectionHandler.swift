import AMQPProtocol
import Foundation
import Logging
import NIOCore
import WarrenCore

/// One client connection: decodes the frames of each socket read (``AMQPFrameReader``), drives the connection state
/// machine and its channels, and writes through one ``OutboundWriter`` flushed once per batch.
final class AMQPConnectionHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  let runtime: BrokerRuntime
  let id: UInt64
  var logger: Logger
  var machine: ConnectionStateMachine
  let outbound: OutboundWriter
  private var reader = AMQPFrameReader(decoder: AMQPFrameDecoder(expectsProtocolHeader: true))
  /// The largest frame accepted: the server's offer until tune-ok, then what was negotiated.
  private(set) var maxFrameSize = 131_072
  var channels: [UInt16: ServerChannel] = [:]
  private var lastChannelNumber: UInt16 = 0
  private var lastChannel: ServerChannel?
  var vhost: VirtualHost?
  var isWritable = true
  var context: ChannelHandlerContext?
  private var stopDecoding = false
  /// A read of this connection started and its read-complete has not come yet.
  private var inRead = false
  private var heartbeats = HeartbeatMonitor(seconds: 0)
  private var heartbeatTask: RepeatedTask?
  private var handshakeTimeout: Scheduled<Void>?
  private var closeTimeout: Scheduled<Void>?
  private var remoteIsLoopback = false
  private var tornDown = false
  /// Counted in its vhost's, user's and the broker's open connections (for their limits).
  private var countedOpen = false
  /// Whether the socket is read, and why not.
  private(set) var readGate = ReadGate()
  private var pauseTimer: Scheduled<Void>?
  /// Messages published during the current read.
  var publishesThisRead = 0
  /// Bytes received from the client (for the metrics endpoint).
  private(set) var bytesReceived = 0
  /// What this connection holds in memory: a partial frame, partial message bodies, bytes not yet sent.
  var bufferedBytes: Int {
    var total = self.reader.partialFrameBytes + self.outbound.pendingBytes
    for channel in self.channels.values { total += channel.machine.bufferedContentBytes }
    return total
  }
  /// Bytes sent to the client (for the metrics endpoint).
  var bytesSent: Int { self.outbound.bytesSent }
  /// When bytes last arrived (the broker clock's time).
  private(set) var lastReadAt = NIODeadline.uptimeNanoseconds(0)
  /// The peer's and the listener's addresses, RabbitMQ's connection name ("127.0.0.1:54321 -> 127.0.0.1:5672").
  private(set) var name = ""
  /// When the connection was accepted, in milliseconds since 1970 (RabbitMQ's `connected_at`).
  let connectedAt = UInt64(Date().timeIntervalSince1970 * 1000)
  /// The peer's address and port, and the listener's port.
  private(set) var peerHost = ""
  private(set) var peerPort = 0
  private(set) var localPort = 0
  /// The TLS version, when the connection came through the TLS listener (`TLSv1.3`).
  private(set) var tlsProtocol: String?
  /// How long to wait for close-ok after connection.close.
  static let closeTimeout = TimeAmount.seconds(5)
  /// How long to wait for close-ok after refusing a login.
  static let refusedLoginCloseTimeout = TimeAmount.seconds(3)
  /// The longest a held-back publisher waits before it reads again.
  static let longestPause = TimeAmount.milliseconds(50)

  init(runtime: BrokerRuntime) {
    self.runtime = runtime
    self.id = runtime.broker.nextConnectionID()
    self.logger = runtime.logger
    self.logger[metadataKey: "connection"] = "\(self.id)"
    self.machine = ConnectionStateMachine(limits: runtime.broker.limits, serverProperties: runtime.serverProperties)
    self.outbound = OutboundWriter(runtime: runtime)
    self.maxFrameSize = Int(runtime.broker.limits.frameMax)
  }

  var broker: Broker { self.runtime.broker }

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    self.outbound.context = context
    self.notePeer(context)
    self.runtime.connections[self.id] = self
    self.broker.counters.values.connectionsOpened += 1
    self.lastReadAt = self.broker.clock.now
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    let timeout = self.broker.limits.handshakeTimeout
    self.handshakeTimeout = context.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout))) {
      let handler = bound.value
      guard !handler.machine.isOpen else { return }
      handler.logger.warning("closing connection: handshake not completed within \(timeout) ms")
      handler.context?.close(promise: nil)
    }
  }

  func channelActive(context: ChannelHandlerContext) {
    self.notePeer(context)
    context.fireChannelActive()
  }

  private func notePeer(_ context: ChannelHandlerContext) {
    guard let remote = context.channel.remoteAddress else { return }
    self.peerHost = remote.ipAddress ?? ""
    self.peerPort = remote.port ?? 0
    self.localPort = context.channel.localAddress?.port ?? 0
    self.name =
      "\(remote.ipAddress ?? "?"):\(remote.port ?? 0) -> "
      + "\(context.channel.localAddress?.ipAddress ?? "?"):\(context.channel.localAddress?.port ?? 0)"
    self.logger[metadataKey: "peer"] = "\(remote)"
    self.remoteIsLoopback = User.isLoopback(address: remote.ipAddress ?? "")
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let established = event as? TLSConnectionEstablished {
      self.tlsProtocol = established.protocolVersion
      if let user = established.certificateUser { self.machine.certificateVerified(user: user) }
    }
    context.fireUserInboundEventTriggered(event)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.teardown()
    self.context = nil
    self.outbound.context = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.teardown()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !self.stopDecoding else { return }
    self.inRead = true
    self.runtime.readStarted()
    self.heartbeats.received()
    let buffer = self.unwrapInboundIn(data)
    self.bytesReceived &+= buffer.readableBytes
    self.lastReadAt = self.broker.clock.now
    do {
      var handler = self
      try self.reader.read(buffer, into: &handler)
    } catch {
      self.logger.warning("closing connection: \(error)")
      self.stopDecoding = true
      self.closeWithError(BrokerError(replyCode: error.replyCode, replyText: error.description))
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    for channel in self.channels.values { channel.flushConfirms() }
    let alarm = self.runtime.alarms.any
    // During an alarm a connection streaming a body it has not finished publishes too, and is blocked.
    let publishing =
      self.publishesThisRead > 0 || (alarm && self.channels.values.contains { $0.isReceivingContent })
    let action = self.readGate.readCompleted(
      publishing: publishing, bulkPublishes: self.publishesThisRead, alarm: alarm,
      clientWantsBlocked: self.machine.clientSupportsConnectionBlocked)
    self.apply(action)
    self.publishesThisRead = 0
    self.endRead()
  }

  /// Ends this connection's read cycle: the runtime flushes what was written during it.
  private func endRead() {
    guard self.inRead else { return }
    self.inRead = false
    self.runtime.readCompleted()
  }

  /// Carries out what the read gate decided.
  private func apply(_ action: ReadGate.Action) {
    guard let context else { return }
    if action.sendBlocked {
      self.outbound.writeMethod(channel: 0, .connectionBlocked(ConnectionBlocked(reason: self.runtime.alarmReason)))
    }
    if action.sendUnblocked { self.outbound.writeMethod(channel: 0, .connectionUnblocked(ConnectionUnblocked())) }
    if action.startPauseTimer {
      let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
      self.pauseTimer = context.eventLoop.scheduleTask(in: Self.longestPause) { bound.value.resumePublishing() }
    }
    if let reading = action.setReading {
      context.channel.setOption(ChannelOptions.autoRead, value: reading).whenFailure { _ in }
    }
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
    // As RabbitMQ: channel_max limits how many channels are open, not their numbers.
    let channelMax = Int(self.machine.tuning.channelMax)
    if channelMax > 0 && self.channels.count >= channelMax {
      self.connectionError(
        .notAllowed(
          "number of channels opened (\(self.channels.count)) has reached the negotiated channel_max (\(channelMax))"))
      return nil
    }
    let user = self.machine.username ?? ""
    if let limit = self.broker.userLimits[user]?.maxChannels, limit >= 0,
      self.broker.userChannels[user, default: 0] >= limit
    {
      self.connectionError(
        .notAllowed(
          "number of channels opened for user '\(user)' has reached the maximum allowed user limit of (\(limit))"))
      return nil
    }
    let channel = ServerChannel(number: number, connection: self, vhost: self.vhost!)
    self.channels[number] = channel
    self.broker.userChannels[user, default: 0] += 1
    self.broker.counters.values.channelsOpened += 1
    self.outbound.writeMethod(channel: number, .channelOpenOk(ChannelOpenOk()))
    return nil
  }

  // MARK: Connection actions

  private func perform(_ action: ConnectionStateMachine.Action) {
    switch action {
    case .none:
      break
    case .send(let method):
      self.outbound.writeMethod(channel: 0, method)
    case .sendProtocolHeaderAndClose:
      self.logger.info("closing connection: bad protocol header")
      self.outbound.writeBytes(amqpProtocolHeader)
      self.stopDecoding = true
      self.outbound.flushAndClose()
    case .authenticate(let mechanism, let username, let password):
      let user =
        password.map { self.broker.authenticate(user: username, password: $0, fromLoopback: self.remoteIsLoopback) }
        ?? self.broker.authenticate(certificateUser: username, fromLoopback: self.remoteIsLoopback)
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
      self.outbound.frameMax = Int(tuning.frameMax)
      self.maxFrameSize = Int(tuning.frameMax)
      self.startHeartbeats(seconds: Int(tuning.heartbeat))
    case .openVirtualHost(let name):
      var error: BrokerError?
      let user = self.machine.username ?? ""
      if let vhost = self.broker.vhosts[name] {
        if self.broker.mayOpen(virtualHost: name, user: user) {
          error = self.admitConnection(to: vhost, user: user)
          if error == nil { self.vhost = vhost }
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
      self.outbound.writeMethod(
        channel: 0,
        .connectionClose(
          ConnectionClose(
            replyCode: error.replyCode, replyText: error.replyText, classID: classID, methodID: methodID)))
      self.closeChannelsForConnectionClose()
      if let context {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        // A refused login waits less for close-ok, as RabbitMQ (about 3 s).
        let timeout = self.machine.username == nil ? Self.refusedLoginCloseTimeout : Self.closeTimeout
        self.closeTimeout = context.eventLoop.scheduleTask(in: timeout) {
          bound.value.context?.close(promise: nil)
        }
      }
    case .sendCloseOkAndClose:
      self.closeChannelsForConnectionClose()  // consumers gone and deliveries requeued before close-ok
      self.outbound.writeMethod(channel: 0, .connectionCloseOk(ConnectionCloseOk()))
      self.stopDecoding = true
      self.outbound.flushAndClose()
    case .closeSocket:
      self.stopDecoding = true
      self.outbound.flushAndClose()
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
    self.outbound.flushAndClose()
  }

  /// Closes with 320 CONNECTION_FORCED (broker shutdown).
  func forceClose(reason: String) {
    self.perform(self.machine.shutdown(reason: reason))
    self.runtime.markDirty(self.outbound)
  }

  /// Whether a publish may still be arriving: part of a frame is buffered, a channel awaits a publish's content, or
  /// bytes arrived within `quietPeriod`.
  func mayBePublishing(quietPeriod: TimeAmount) -> Bool {
    guard self.machine.isOpen, !self.stopDecoding else { return false }
    if self.reader.hasPartialFrame || self.channels.values.contains(where: { $0.isReceivingContent }) { return true }
    return self.lastReadAt + quietPeriod > self.broker.clock.refresh()
  }

  /// Cancels every consumer of every channel (the broker is shutting down).
  func cancelConsumersForShutdown() {
    for channel in self.channels.values { channel.cancelConsumersForShutdown() }
  }

  // MARK: Heartbeats

  private func startHeartbeats(seconds: Int) {
    self.heartbeats = HeartbeatMonitor(seconds: seconds)
    guard seconds > 0, let context else { return }
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    let tick = self.heartbeats.tickInterval
    self.heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
      bound.value.heartbeatTick()
    }
  }

  private func heartbeatTick() {
    if self.outbound.flushedSinceTick {
      self.outbound.flushedSinceTick = false
      self.heartbeats.sent()
    }
    // A client blocked by an alarm is not read, so its heartbeats are not seen: it is not silent.
    switch self.heartbeats.tick(peerPaused: self.readGate.isBlockedByAlarm) {
    case .none:
      break
    case .sendHeartbeat:
      self.outbound.writeHeartbeat()
      self.outbound.flush()
      self.outbound.flushedSinceTick = false
      self.heartbeats.heartbeatWritten()
    case .peerTimedOut:
      self.logger.warning("closing connection: missed heartbeats from client, timeout: \(self.heartbeats.seconds)s")
      self.stopDecoding = true
      self.context?.close(promise: nil)
    }
  }

  // MARK: Teardown

  private func closeChannelsForConnectionClose() {
    for channel in self.channels.values { channel.release() }
    self.broker.counters.values.channelsClosed += self.channels.count
    self.countChannelsClosed(self.channels.count)
    self.channels.removeAll()
    self.lastChannel = nil
  }

  /// The user's channel count for `max-channels`.
  private func countChannelsClosed(_ count: Int) {
    guard count > 0, let user = self.machine.username else { return }
    let left = self.broker.userChannels[user, default: 0] - count
    self.broker.userChannels[user] = left > 0 ? left : nil
  }

  /// Counts an opened connection for the vhost, user and broker limits; false (and the error) when one is reached.
  private func admitConnection(to vhost: VirtualHost, user: String) -> BrokerError? {
    if let limit = vhost.limits.maxConnections, limit >= 0, vhost.connectionCount >= limit {
      return .notAllowed(
        "access to vhost '\(vhost.name)' refused for user '\(user)': connection limit (\(limit)) is reached")
    }
    if let limit = self.broker.userLimits[user]?.maxConnections, limit >= 0,
      self.broker.userConnections[user, default: 0] >= limit
    {
      return .notAllowed("connection refused for user '\(user)': user connection limit (\(limit)) is reached")
    }
    if let limit = self.broker.connectionMax, self.broker.openConnectionCount >= limit {
      return .notAllowed(
        "access to vhost '\(vhost.name)' refused for user '\(user)': node connection limit (\(limit)) is reached")
    }
    vhost.connectionCount += 1
    self.broker.userConnections[user, default: 0] += 1
    self.broker.openConnectionCount += 1
    self.countedOpen = true
    return nil
  }

  /// Releases everything the connection held: consumers, unacked deliveries (requeued), exclusive queues.
  private func teardown() {
    guard !self.tornDown else { return }
    self.tornDown = true
    self.heartbeatTask?.cancel()
    self.pauseTimer?.cancel()
    self.handshakeTimeout?.cancel()
    self.closeTimeout?.cancel()
    self.closeChannelsForConnectionClose()
    if self.countedOpen, let vhost = self.vhost, let user = self.machine.username {
      vhost.connectionCount -= 1
      let left = self.broker.userConnections[user, default: 0] - 1
      self.broker.userConnections[user] = left > 0 ? left : nil
      self.broker.openConnectionCount -= 1
    }
    self.vhost?.removeExclusiveQueues(of: self.id)
    self.runtime.connections[self.id] = nil
    // Closed in the middle of a read, its read-complete will not come: end the cycle here, or writes made later
    // outside any read (connection.unblocked after an alarm) would wait for a flush that never comes.
    self.endRead()
    self.broker.counters.values.connectionsClosed += 1
    if self.vhost != nil {
      self.logger.info("connection closed")
    }
    self.runtime.flushDirty()
  }

  func channelClosed(_ number: UInt16) {
    if self.channels.removeValue(forKey: number) != nil {
      self.broker.counters.values.channelsClosed += 1
      self.countChannelsClosed(1)
    }
    if number == self.lastChannelNumber {
      self.lastChannel = nil
    }
  }
}

extension AMQPConnectionHandler: AMQPFrameHandler {
  var continuesDecoding: Bool { !self.stopDecoding }

  func protocolHeaderReceived(_ bytes: [UInt8]) {
    self.perform(self.machine.protocolHeaderReceived(bytes))
  }

  func methodReceived(_ method: AMQPMethod, channel number: UInt16) {
    if number == 0 {
      self.perform(self.machine.methodReceived(method))
    } else if let channel = self.channelForFrame(number, method: method) {
      channel.methodReceived(method)
    }
  }

  @inline(__always)
  func publishReceived(_ publish: BasicPublish, channel number: UInt16) {
    if number == self.lastChannelNumber, let channel = self.lastChannel, self.machine.isOpen {
      channel.publishReceived(publish)
    } else {
      self.methodReceived(.basicPublish(publish), channel: number)
    }
  }

  @inline(__always)
  func headerReceived(_ header: ContentHeader, channel number: UInt16) {
    guard number != 0 else {
      return self.connectionError(.unexpectedFrame("content header frame on channel 0"))
    }
    guard let channel = self.channelForFrame(number, method: nil) else { return }
    channel.headerReceived(header)
  }

  @inline(__always)
  func bodyReceived(_ body: ByteBuffer, channel number: UInt16) {
    guard number != 0 else {
      return self.connectionError(.unexpectedFrame("content body frame on channel 0"))
    }
    guard let channel = self.channelForFrame(number, method: nil) else { return }
    channel.bodyReceived(body)
    self.runtime.pollSyncResults()
  }

  func heartbeatReceived(channel: UInt16) {
    if channel != 0 {
      self.connectionError(.unexpectedFrame("heartbeat frame on channel \(channel)"))
    }
  }
}

extension AMQPConnectionHandler: FlowControlledPublisher {
  func holdBackPublishing() {
    self.readGate.throttleRequestedByQueue()
  }

  func resumePublishing() {
    self.pauseTimer?.cancel()
    self.pauseTimer = nil
    self.apply(self.readGate.pauseEnded())
  }

  /// The resource alarms cleared: a blocked publisher is told (connection.unblocked) and read again.
  func resourceAlarmsCleared() {
    self.apply(self.readGate.alarmsCleared())
  }
}
