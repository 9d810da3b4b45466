import Atomics
import NIOCore

/// The socket side of a connection whose socket lives on a connection loop (not the broker's): sits last in the
/// socket's pipeline (behind TLS), hands each read's bytes to the broker loop in one batch at read-complete, and
/// writes what the broker sends in one batch per flush. See ``BrokerSideChannel``.
///
/// Inbound bytes are credited: at most ``maxBytesInFlight`` handed over and not yet processed by the broker, so a
/// busy broker loop slows the socket's reads instead of queueing without bound. The broker acknowledges every
/// ``acknowledgeEvery`` bytes (one hop back per that many bytes, not per read).
final class ConnectionRelay: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer

  static let maxBytesInFlight = 1 << 20
  static let acknowledgeEvery = 1 << 18

  private let makeConnection: @Sendable (BrokerSideChannel) -> Void
  private let brokerLoop: any EventLoop
  private var side: BrokerSideChannel?
  private var batch: [ByteBuffer] = []
  private var batchBytes = 0
  private var sentBytes = 0
  private var acknowledgedBytes = 0
  private var acknowledgementAskedAt = 0
  /// The broker's own choice (its read gate: flow control, alarms).
  private var brokerWantsReading = true
  /// Too much handed over and not yet processed.
  private var backlogged = false
  private var context: ChannelHandlerContext?

  /// - Parameter makeConnection: called on the broker loop with the new broker-side channel, to add the
  ///   connection's handler to its pipeline.
  init(brokerLoop: any EventLoop, makeConnection: @escaping @Sendable (BrokerSideChannel) -> Void) {
    self.brokerLoop = brokerLoop
    self.makeConnection = makeConnection
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    let side = BrokerSideChannel(
      socket: context.channel, brokerLoop: self.brokerLoop,
      relay: NIOLoopBound(self, eventLoop: context.eventLoop))
    self.side = side
    let makeConnection = self.makeConnection
    self.brokerLoop.execute {
      makeConnection(side)
      side.activate()
    }
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = self.unwrapInboundIn(data)
    self.batchBytes += buffer.readableBytes
    self.batch.append(buffer)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    guard let side, !self.batch.isEmpty else { return }
    let batch = self.batch
    self.batch = []
    self.sentBytes += self.batchBytes
    self.batchBytes = 0
    let askAcknowledgement = self.sentBytes - self.acknowledgementAskedAt >= Self.acknowledgeEvery
    if askAcknowledgement { self.acknowledgementAskedAt = self.sentBytes }
    let acknowledgeUpTo = askAcknowledgement ? self.sentBytes : -1
    self.brokerLoop.execute { side.received(batch, acknowledgeUpTo: acknowledgeUpTo) }
    if self.sentBytes - self.acknowledgedBytes > Self.maxBytesInFlight && !self.backlogged {
      self.backlogged = true
      self.updateReading()
    }
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    let writable = context.channel.isWritable
    if let side { self.brokerLoop.execute { side.writabilityChanged(writable) } }
    context.fireChannelWritabilityChanged()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let established = event as? TLSConnectionEstablished, let side {
      self.brokerLoop.execute { side.pipeline.syncOperations.fireUserInboundEventTriggered(established) }
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if let side { self.brokerLoop.execute { side.socketClosed() } }
    self.side = nil
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // What the TLS layer raises it logs itself; anything else ends the socket as on the broker's loop.
    context.close(promise: nil)
  }

  /// The broker processed everything up to `bytes` (counted from the first byte handed over).
  func acknowledged(upTo bytes: Int) {
    self.acknowledgedBytes = max(self.acknowledgedBytes, bytes)
    if self.backlogged && self.sentBytes - self.acknowledgedBytes <= Self.maxBytesInFlight {
      self.backlogged = false
      self.updateReading()
    }
  }

  /// The broker's read gate asked to read or not.
  func setBrokerReading(_ reading: Bool) {
    self.brokerWantsReading = reading
    self.updateReading()
  }

  /// Whether the socket is read: the broker wants it and not too much is waiting for the broker.
  var isReading: Bool { self.brokerWantsReading && !self.backlogged }

  private func updateReading() {
    guard let context else { return }
    context.channel.setOption(ChannelOptions.autoRead, value: self.isReading).whenFailure { _ in }
  }
}

/// The broker loop's view of a connection whose socket is on a connection loop: a `Channel` whose pipeline holds
/// the AMQP connection handler, as on a socket of the broker's own loop. Reads arrive in batches from the
/// ``ConnectionRelay``; writes are collected and sent to the socket in one hop per flush; writability, close and
/// the TLS handshake's event are mirrored. Its state is the broker loop's (the atomics are what `Channel` must
/// answer from any thread).
final class BrokerSideChannel: Channel, ChannelCore, @unchecked Sendable {
  let socket: any Channel
  let eventLoop: any EventLoop
  private let relay: NIOLoopBound<ConnectionRelay>
  private var _pipeline: ChannelPipeline!
  private let closePromise: EventLoopPromise<Void>
  private let writable = ManagedAtomic(true)
  private let active = ManagedAtomic(false)
  private var open = true
  /// Written since the last flush, with the promises of those writes.
  private var pending: [ByteBuffer] = []
  private var pendingPromises: [EventLoopPromise<Void>?] = []
  private var closePromises: [EventLoopPromise<Void>] = []
  let localAddress: SocketAddress?
  let remoteAddress: SocketAddress?

  init(socket: any Channel, brokerLoop: any EventLoop, relay: NIOLoopBound<ConnectionRelay>) {
    self.socket = socket
    self.eventLoop = brokerLoop
    self.relay = relay
    self.closePromise = brokerLoop.makePromise()
    self.localAddress = socket.localAddress
    self.remoteAddress = socket.remoteAddress
    self._pipeline = ChannelPipeline(channel: self)
  }

  var pipeline: ChannelPipeline { self._pipeline }
  var allocator: ByteBufferAllocator { self.socket.allocator }
  var closeFuture: EventLoopFuture<Void> { self.closePromise.futureResult }
  var parent: (any Channel)? { nil }
  var isWritable: Bool { self.writable.load(ordering: .relaxed) }
  var isActive: Bool { self.active.load(ordering: .relaxed) }
  var _channelCore: any ChannelCore { self }

  func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
    if option is ChannelOptions.Types.AutoReadOption, let reading = value as? Bool {
      let relay = self.relay
      self.socket.eventLoop.execute { relay.value.setBrokerReading(reading) }
      return self.eventLoop.makeSucceededVoidFuture()
    }
    return self.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
  }

  func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
    self.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
  }

  // MARK: From the socket side (on the broker loop)

  func activate() {
    self.active.store(true, ordering: .relaxed)
    self.pipeline.syncOperations.fireChannelRegistered()
    self.pipeline.syncOperations.fireChannelActive()
  }

  func received(_ batch: [ByteBuffer], acknowledgeUpTo: Int) {
    guard self.open else { return }
    let pipeline = self.pipeline.syncOperations
    for buffer in batch { pipeline.fireChannelRead(NIOAny(buffer)) }
    pipeline.fireChannelReadComplete()
    if acknowledgeUpTo >= 0 {
      let relay = self.relay
      self.socket.eventLoop.execute { relay.value.acknowledged(upTo: acknowledgeUpTo) }
    }
  }

  func writabilityChanged(_ writable: Bool) {
    guard self.open, self.writable.load(ordering: .relaxed) != writable else { return }
    self.writable.store(writable, ordering: .relaxed)
    self.pipeline.syncOperations.fireChannelWritabilityChanged()
  }

  func socketClosed() {
    guard self.open else { return }
    self.open = false
    self.active.store(false, ordering: .relaxed)
    for promise in self.pendingPromises { promise?.fail(ChannelError.ioOnClosedChannel) }
    self.pending = []
    self.pendingPromises = []
    self.pipeline.syncOperations.fireChannelInactive()
    self.pipeline.syncOperations.fireChannelUnregistered()
    let closing = self.closePromises
    self.closePromises = []
    let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
    self.eventLoop.execute {
      let channel = bound.value
      channel.removeHandlers(pipeline: channel.pipeline)
      channel.closePromise.succeed(())
      for promise in closing { promise.succeed(()) }
    }
  }

  // MARK: ChannelCore (the pipeline's head calls these on the broker loop)

  func localAddress0() throws -> SocketAddress {
    guard let address = self.localAddress else { throw ChannelError.unknownLocalAddress }
    return address
  }

  func remoteAddress0() throws -> SocketAddress {
    guard let address = self.remoteAddress else { throw ChannelError.unknownLocalAddress }
    return address
  }

  func register0(promise: EventLoopPromise<Void>?) { promise?.succeed(()) }
  func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) { promise?.succeed(()) }
  func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
    promise?.fail(ChannelError.operationUnsupported)
  }
  func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
    promise?.fail(ChannelError.operationUnsupported)
  }

  func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
    guard self.open else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    self.pending.append(self.unwrapData(data, as: ByteBuffer.self))
    self.pendingPromises.append(promise)
  }

  func flush0() {
    guard self.open, !self.pending.isEmpty else { return }
    let buffers = self.pending
    let promises = self.pendingPromises
    self.pending = []
    self.pendingPromises = []
    let socket = self.socket
    socket.eventLoop.execute {
      for (buffer, promise) in zip(buffers, promises) {
        if let promise {
          let written = socket.eventLoop.makePromise(of: Void.self)
          written.futureResult.cascade(to: promise)
          socket.write(buffer, promise: written)
        } else {
          socket.write(buffer, promise: nil)
        }
      }
      socket.flush()
    }
  }

  func read0() {}

  func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    guard self.open else {
      promise?.fail(ChannelError.alreadyClosed)
      return
    }
    if let promise { self.closePromises.append(promise) }
    let socket = self.socket
    socket.eventLoop.execute { socket.close(mode: mode, promise: nil) }
  }

  func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
    promise?.fail(ChannelError.operationUnsupported)
  }

  func channelRead0(_ data: NIOAny) {}
  func errorCaught0(error: any Error) {}
}
