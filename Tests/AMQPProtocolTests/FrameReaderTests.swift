import AMQPProtocol
import NIOCore
import Testing

/// Records what the reader hands over, basic.publish and content frames through their own calls.
struct RecordingFrameHandler: AMQPFrameHandler {
  enum Event: Equatable {
    case protocolHeader([UInt8])
    case method(UInt16, AMQPMethod)
    case publish(UInt16, BasicPublish)
    case header(UInt16, ContentHeader)
    case body(UInt16, ByteBuffer)
    case heartbeat(UInt16)
  }

  var events: [Event] = []
  var maxFrameSize = 0
  var stopAfter = Int.max

  mutating func protocolHeaderReceived(_ bytes: [UInt8]) { self.events.append(.protocolHeader(bytes)) }
  mutating func methodReceived(_ method: AMQPMethod, channel: UInt16) { self.events.append(.method(channel, method)) }
  mutating func publishReceived(_ publish: BasicPublish, channel: UInt16) {
    self.events.append(.publish(channel, publish))
  }
  mutating func headerReceived(_ header: ContentHeader, channel: UInt16) {
    self.events.append(.header(channel, header))
  }
  mutating func bodyReceived(_ body: ByteBuffer, channel: UInt16) { self.events.append(.body(channel, body)) }
  mutating func heartbeatReceived(channel: UInt16) { self.events.append(.heartbeat(channel)) }
  var continuesDecoding: Bool { self.events.count < self.stopAfter }
}

@Suite("Frame reader: one decoder for every read pattern")
struct FrameReaderTests {
  /// A client's opening: protocol header, start-ok, then three publishes of growing bodies and a heartbeat.
  static func stream() -> (ByteBuffer, [RecordingFrameHandler.Event]) {
    var bytes = ByteBuffer(bytes: amqpProtocolHeader)
    var expected: [RecordingFrameHandler.Event] = [.protocolHeader(amqpProtocolHeader)]
    let startOk = AMQPMethod.connectionStartOk(
      ConnectionStartOk(clientProperties: ["product": .longString("t")], response: [0, 0]))
    bytes.writeAMQPFrame(.method(channel: 0, startOk))
    expected.append(.method(0, startOk))
    for (i, size) in [0, 5, 3000].enumerated() {
      let publish = BasicPublish(exchange: "ex\(i)", routingKey: "key", mandatory: i == 1)
      let header = ContentHeader(bodySize: UInt64(size), properties: BasicProperties(deliveryMode: 2))
      bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(publish)))
      bytes.writeAMQPFrame(.header(channel: 1, header))
      expected += [.publish(1, publish), .header(1, header)]
      if size > 0 {
        let body = ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0) })
        bytes.writeAMQPFrame(.body(channel: 1, body))
        expected.append(.body(1, body))
      }
    }
    bytes.writeAMQPHeartbeatFrame()
    expected.append(.heartbeat(0))
    return (bytes, expected)
  }

  static func read(_ bytes: ByteBuffer, inChunksOf sizes: some Sequence<Int>) throws -> [RecordingFrameHandler.Event] {
    var reader = AMQPFrameReader(decoder: AMQPFrameDecoder(expectsProtocolHeader: true))
    var handler = RecordingFrameHandler()
    var rest = bytes
    var sizes = sizes.makeIterator()
    while rest.readableBytes > 0 {
      let size = min(max(sizes.next() ?? rest.readableBytes, 1), rest.readableBytes)
      try reader.read(rest.readSlice(length: size)!, into: &handler)
    }
    #expect(!reader.hasPartialFrame)
    return handler.events
  }

  @Test("whole, byte by byte, and in chunks of every size up to 40: the same frames, publish on its fast path")
  func chunking() throws {
    let (bytes, expected) = Self.stream()
    #expect(try Self.read(bytes, inChunksOf: [bytes.readableBytes]) == expected)
    #expect(try Self.read(bytes, inChunksOf: repeatElement(1, count: bytes.readableBytes)) == expected)
    for size in 2...40 {
      #expect(try Self.read(bytes, inChunksOf: repeatElement(size, count: bytes.readableBytes)) == expected)
    }
  }

  @Test("random splits give the same frames", arguments: [7, 8, 9])
  func randomSplits(seed: UInt64) throws {
    var generator = SplitMix64(seed: seed)
    let (bytes, expected) = Self.stream()
    let sizes = (0..<bytes.readableBytes).map { _ in Int(generator.next() % 700) + 1 }
    #expect(try Self.read(bytes, inChunksOf: sizes) == expected)
  }

  @Test("a frame too large for the limit is refused from its header, even split across reads")
  func oversizedSplit() throws {
    var bytes = ByteBuffer()
    bytes.writeAMQPFrame(.body(channel: 1, ByteBuffer(repeating: 0, count: 5000)))
    var reader = AMQPFrameReader()
    var handler = RecordingFrameHandler(maxFrameSize: 4096)
    try reader.read(bytes.getSlice(at: 0, length: 3)!, into: &handler)
    #expect(reader.hasPartialFrame)
    #expect(throws: AMQPProtocolError.frameTooLarge(size: 5000, max: 4088)) {
      try reader.read(bytes.getSlice(at: 3, length: 10)!, into: &handler)
    }
    #expect(handler.events.isEmpty)
  }

  @Test("a handler that stops decoding gets no more frames, and nothing is kept")
  func stop() throws {
    let (bytes, expected) = Self.stream()
    var reader = AMQPFrameReader(decoder: AMQPFrameDecoder(expectsProtocolHeader: true))
    var handler = RecordingFrameHandler(stopAfter: 3)
    try reader.read(bytes, into: &handler)
    #expect(handler.events == Array(expected.prefix(3)))
    #expect(!reader.hasPartialFrame)
  }

  @Test("the closure form sees basic.publish as a method frame")
  func closureForm() throws {
    var bytes = ByteBuffer()
    let publish = BasicPublish(exchange: "e", routingKey: "k")
    bytes.writeAMQPFrame(.method(channel: 2, .basicPublish(publish)))
    var reader = AMQPFrameReader()
    var frames: [Frame] = []
    try reader.read(bytes) { frames.append($0) }
    #expect(frames == [.method(channel: 2, .basicPublish(publish))])
  }
}

@Suite("Heartbeat monitor")
struct HeartbeatMonitorTests {
  @Test("a heartbeat goes out only when nothing else did; the peer is gone after four silent ticks")
  func ticks() {
    var monitor = HeartbeatMonitor(seconds: 10)
    #expect(monitor.tickInterval == .seconds(5))
    monitor.sent()
    monitor.received()
    #expect(monitor.tick() == .none)
    #expect(monitor.tick() == .sendHeartbeat)  // silent tick 1, nothing sent
    monitor.heartbeatWritten()
    #expect(monitor.tick() == .sendHeartbeat)  // the heartbeat itself is not traffic
    #expect(monitor.tick() == .sendHeartbeat)  // 3
    monitor.received()
    #expect(monitor.tick() == .sendHeartbeat)  // heard from the peer: the count starts again
    for _ in 0..<3 { #expect(monitor.tick() != .peerTimedOut) }
    #expect(monitor.tick() == .peerTimedOut)
  }

  @Test("a peer we stopped reading is never silent")
  func paused() {
    var monitor = HeartbeatMonitor(seconds: 1)
    for _ in 0..<10 { #expect(monitor.tick(peerPaused: true) == .sendHeartbeat) }
    #expect(monitor.tick() == .sendHeartbeat)
  }
}

@Suite("Frame decoder: fuzzer findings")
struct FuzzFindingTests {
  @Test("a wrong protocol header is reported with the bytes that showed it, however the reads are cut")
  func wrongHeader() throws {
    for cut in [2, 5, 8] {  // "A" alone could still be the right header: nothing is reported yet
      var decoder = AMQPFrameDecoder(expectsProtocolHeader: true)
      var bytes = ByteBuffer(bytes: Array("A\u{04}\0\0\0\0\0\0".utf8).prefix(cut))
      guard case .protocolHeader(let seen) = try decoder.decodeFrame(&bytes) else {
        Issue.record("no protocol header for a cut of \(cut)")
        continue
      }
      #expect(seen != amqpProtocolHeader && !seen.isEmpty && seen.count <= cut)
    }
  }

  @Test("a field table holding NaN re-encodes to the same bytes (values compare unequal, bytes do not)")
  func nan() throws {
    var bytes = ByteBuffer()
    bytes.writeAMQPFieldTable(["d": .double(.nan), "d ": .double(1)])
    let first = bytes
    let table = try bytes.readAMQPFieldTable()
    var again = ByteBuffer()
    again.writeAMQPFieldTable(table)
    #expect(again == first)
  }
}
