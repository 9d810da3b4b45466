import NIOCore
import NIOEmbedded
import Testing

@testable import WarrenServer

/// Set by a future's callback (the test's loops all run on the test's thread).
final class Flag: @unchecked Sendable {
  var value = false
}

/// Records what reaches the broker side's pipeline.
final class RecordingHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer

  enum Event: Equatable {
    case active
    case read(String)
    case readComplete
    case writability(Bool)
    case established(String)
    case inactive
  }

  var events: [Event] = []
  var context: ChannelHandlerContext?

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }
  func channelActive(context: ChannelHandlerContext) { self.events.append(.active) }
  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    self.events.append(.read(String(buffer: self.unwrapInboundIn(data))))
  }
  func channelReadComplete(context: ChannelHandlerContext) { self.events.append(.readComplete) }
  func channelWritabilityChanged(context: ChannelHandlerContext) {
    self.events.append(.writability(context.channel.isWritable))
  }
  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let established = event as? TLSConnectionEstablished {
      self.events.append(.established(established.protocolVersion))
    }
  }
  func channelInactive(context: ChannelHandlerContext) { self.events.append(.inactive) }
}

/// A socket on one loop (an EmbeddedChannel) and the broker's loop (another EmbeddedEventLoop): each loop runs only
/// when the test says, so every hop between them is visible.
struct HandedOverPair {
  let socket: EmbeddedChannel
  let relay: ConnectionRelay
  let brokerLoop = EmbeddedEventLoop()
  let recorder = RecordingHandler()
  var side: BrokerSideChannel { self.recorder.context!.channel as! BrokerSideChannel }

  init() throws {
    let recorder = NIOLoopBound(self.recorder, eventLoop: self.brokerLoop)
    self.relay = ConnectionRelay(brokerLoop: self.brokerLoop) { side in
      try! side.pipeline.syncOperations.addHandler(recorder.value)
    }
    self.socket = EmbeddedChannel()
    try self.socket.pipeline.syncOperations.addHandler(self.relay)
    try self.socket.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5671)).wait()
    self.brokerLoop.run()
  }

  /// One buffer read from the socket (its read-complete is the test's to fire).
  func read(_ text: String) throws {
    self.socket.pipeline.syncOperations.fireChannelRead(NIOAny(ByteBuffer(string: text)))
  }

  func written() throws -> [String] {
    var out: [String] = []
    while let buffer = try self.socket.readOutbound(as: ByteBuffer.self) { out.append(String(buffer: buffer)) }
    return out
  }
}

@Suite("A connection whose socket is on another loop")
struct HandedOverConnectionTests {
  @Test("a read's bytes reach the broker's loop together, with one read-complete, only when that loop runs")
  func readsAreHandedOverPerBatch() throws {
    let pair = try HandedOverPair()
    #expect(pair.recorder.events == [.active])
    #expect(pair.side.isActive)
    try pair.read("one")
    try pair.read("two")
    #expect(pair.recorder.events == [.active])  // not yet: nothing crosses before read-complete
    pair.socket.pipeline.syncOperations.fireChannelReadComplete()
    #expect(pair.recorder.events == [.active])  // handed over, not yet run
    pair.brokerLoop.run()
    #expect(pair.recorder.events == [.active, .read("one"), .read("two"), .readComplete])
  }

  @Test("what the broker writes goes to the socket in order at its flush; a write's promise completes")
  func writesAreSentAtFlush() throws {
    let pair = try HandedOverPair()
    let context = pair.recorder.context!
    context.write(NIOAny(ByteBuffer(string: "a")), promise: nil)
    let second = context.write(NIOAny(ByteBuffer(string: "b")))
    pair.socket.embeddedEventLoop.run()
    #expect(try pair.written() == [])  // not flushed
    context.flush()
    #expect(try pair.written() == [])  // handed to the socket's loop, not yet run
    pair.socket.embeddedEventLoop.run()
    #expect(try pair.written() == ["a", "b"])
    let succeeded = Flag()
    second.whenSuccess { succeeded.value = true }
    pair.brokerLoop.run()
    #expect(succeeded.value)
  }

  @Test("more than a megabyte not yet processed stops the socket's reads until the broker catches up")
  func backlogStopsReading() throws {
    let pair = try HandedOverPair()
    let chunk = String(repeating: "x", count: 64 * 1024)
    for _ in 0..<17 {
      try pair.read(chunk)
      pair.socket.pipeline.syncOperations.fireChannelReadComplete()
    }
    #expect(!pair.relay.isReading)
    pair.brokerLoop.run()  // processes every batch; asks the socket's loop to note it
    #expect(!pair.relay.isReading)
    pair.socket.embeddedEventLoop.run()
    #expect(pair.relay.isReading)
    #expect(pair.recorder.events.filter { $0 == .readComplete }.count == 17)
  }

  @Test("the broker's read gate (autoRead) reaches the socket's loop")
  func brokerReadGate() throws {
    let pair = try HandedOverPair()
    _ = pair.side.setOption(ChannelOptions.autoRead, value: false)
    #expect(pair.relay.isReading)
    pair.socket.embeddedEventLoop.run()
    #expect(!pair.relay.isReading)
    _ = pair.side.setOption(ChannelOptions.autoRead, value: true)
    pair.socket.embeddedEventLoop.run()
    #expect(pair.relay.isReading)
  }

  @Test("the socket's writability and the TLS handshake's event are mirrored on the broker's side")
  func writabilityAndTLSEvent() throws {
    let pair = try HandedOverPair()
    pair.socket.pipeline.syncOperations.fireUserInboundEventTriggered(
      TLSConnectionEstablished(protocolVersion: "tlsv1.3", certificateUser: nil))
    pair.socket.isWritable = false
    pair.socket.pipeline.syncOperations.fireChannelWritabilityChanged()
    #expect(pair.side.isWritable)
    pair.brokerLoop.run()
    #expect(!pair.side.isWritable)
    #expect(pair.recorder.events == [.active, .established("tlsv1.3"), .writability(false)])
  }

  @Test("closing on the broker's side closes the socket; then the broker's side goes inactive and closes")
  func brokerCloses() throws {
    let pair = try HandedOverPair()
    let side = pair.side
    let closed = Flag()
    side.closeFuture.whenSuccess { closed.value = true }
    let closing = pair.recorder.context!.close()
    #expect(pair.socket.isActive)
    pair.socket.embeddedEventLoop.run()
    #expect(!pair.socket.isActive)
    pair.brokerLoop.run()
    #expect(pair.recorder.events.last == .inactive)
    #expect(!side.isActive)
    #expect(closed.value)
    let closeSucceeded = Flag()
    closing.whenSuccess { closeSucceeded.value = true }
    #expect(closeSucceeded.value)
  }

  @Test("a peer that goes away makes the broker's side inactive; later writes fail")
  func peerCloses() throws {
    let pair = try HandedOverPair()
    let side = pair.side
    _ = try pair.socket.finish()
    pair.brokerLoop.run()
    #expect(pair.recorder.events == [.active, .inactive])
    #expect(!side.isActive)
    let failed = Flag()
    side.write(ByteBuffer(string: "late")).whenFailure { _ in failed.value = true }
    #expect(failed.value)
  }
}
