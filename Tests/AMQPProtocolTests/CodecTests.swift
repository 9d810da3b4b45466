import AMQPProtocol
import NIOCore
import NIOTestUtils
import Testing

@Suite("Method and frame codec")
struct CodecTests {
  @Test("every method round-trips through a method frame", arguments: allMethodSamples)
  func methodRoundTrip(method: AMQPMethod) throws {
    var buffer = ByteBuffer()
    buffer.writeAMQPMethodFrame(channel: 3, method)
    var decoder = AMQPFrameDecoder()
    let frame = try decoder.decodeFrame(&buffer)
    #expect(frame == .method(channel: 3, method))
    #expect(buffer.readableBytes == 0)
  }

  @Test(
    "the one-pass ack writer matches the generic method encoding for basic.ack and basic.nack",
    arguments: [
      (false, false, false), (true, false, false), (false, true, false), (true, true, true), (false, true, true),
    ]
  )
  func ackFastPath(multiple: Bool, nack: Bool, requeue: Bool) {
    for tag: UInt64 in [0, 1, 300, UInt64.max] {
      let method: AMQPMethod =
        nack
        ? .basicNack(BasicNack(deliveryTag: tag, multiple: multiple, requeue: requeue))
        : .basicAck(BasicAck(deliveryTag: tag, multiple: multiple))
      var payload = ByteBuffer()
      method.encode(into: &payload)  // the generic encoding, frame by hand around it
      var expected = ByteBuffer()
      expected.writeInteger(UInt8(1))
      expected.writeInteger(UInt16(513))
      expected.writeInteger(UInt32(payload.readableBytes))
      expected.writeBuffer(&payload)
      expected.writeInteger(amqpFrameEnd)
      var direct = ByteBuffer(bytes: [9])  // after other bytes, as in a connection's outbound buffer
      direct.writeAMQPAckFrame(channel: 513, deliveryTag: tag, multiple: multiple, nack: nack, requeue: requeue)
      #expect(Array(direct.readableBytesView.dropFirst()) == Array(expected.readableBytesView))
    }
  }

  @Test("the one-pass delivery writer matches frame by frame encoding", arguments: [0, 5, 4088, 4089, 10_000])
  func deliveryFastPath(bodySize: Int) {
    let body = ByteBuffer(bytes: (0..<bodySize).map { UInt8(truncatingIfNeeded: $0) })
    let header = ContentHeader(bodySize: UInt64(bodySize), properties: BasicProperties(contentType: "a/b", priority: 3))
    var expected = ByteBuffer()
    expected.writeAMQPMethodFrame(
      channel: 4,
      .basicDeliver(BasicDeliver(consumerTag: "tag", deliveryTag: 77, redelivered: true, exchange: "x", routingKey: ""))
    )
    expected.writeAMQPContentHeaderFrame(channel: 4, bodySize: UInt64(bodySize), rawProperties: header.rawProperties)
    expected.writeAMQPBodyFrames(channel: 4, body: body, maxFrameSize: 4096)
    var direct = ByteBuffer()
    Array("tag".utf8).withUnsafeBytes { tag in
      Array("x".utf8).withUnsafeBytes { exchange in
        header.rawProperties.withUnsafeReadableBytes { properties in
          body.withUnsafeReadableBytes { bytes in
            direct.writeAMQPDelivery(
              channel: 4, consumerTag: tag, deliveryTag: 77, redelivered: true, exchange: exchange,
              routingKey: UnsafeRawBufferPointer(start: nil, count: 0), properties: properties, body: bytes,
              maxFrameSize: 4096)
          }
        }
      }
    }
    #expect(direct == expected)
  }

  @Test("a table key of invalid UTF-8 that grows past 255 bytes is cut at a whole character and round-trips")
  func longKeyFromInvalidUTF8() throws {
    // The fuzzer's input: 100 bytes 0xEF read as a key become 100 U+FFFD (300 bytes in UTF-8).
    var input = ByteBuffer()
    let key = [UInt8](repeating: 0xEF, count: 100)
    input.writeInteger(UInt32(1 + key.count + 1 + 1))
    input.writeInteger(UInt8(key.count))
    input.writeBytes(key)
    input.writeBytes([UInt8(ascii: "t"), 1])
    let table = try input.readAMQPFieldTable()
    var first = ByteBuffer()
    first.writeAMQPFieldTable(table)
    var copy = first
    let again = try copy.readAMQPFieldTable()
    var second = ByteBuffer()
    second.writeAMQPFieldTable(again)
    #expect(first == second)
    #expect(Array(again).count == 1 && Array(again).first?.key.utf8.count == 255)
  }

  @Test("AMQP URLs are parsed and percent-decoded")
  func urls() {
    #expect(
      AMQPURL("amqp://u%40x:p%3Aw@broker:5673/my%2Fvhost")
        == {
          var url = AMQPURL("amqp://")!
          (url.username, url.password, url.host, url.port, url.virtualHost) = ("u@x", "p:w", "broker", 5673, "my/vhost")
          return url
        }())
    #expect(AMQPURL("amqp://")?.virtualHost == "/")
    #expect(AMQPURL("amqp://h/%2F")?.virtualHost == "/")
    #expect(AMQPURL("amqp://h:notaport/") == nil)
    #expect(AMQPURL("http://h/") == nil)
    #expect(AMQPURL("amqps://h/").map { ($0.tls, $0.port) } ?? (false, 0) == (true, 5671))
    #expect(AMQPURL("amqps://h:5999/")?.port == 5999)
    #expect(AMQPURL("amqp://h/")?.tls == false)
  }

  @Test("the samples cover all 66 methods")
  func samplesCoverEveryMethod() {
    let names = Set(allMethodSamples.map(\.name))
    #expect(names.count == 66)
    #expect(!names.contains { $0.hasPrefix("unknown") })
  }

  @Test("bits pack into octets as the spec says")
  func bitPacking() {
    var buffer = ByteBuffer()
    AMQPMethod.queueDeclare(QueueDeclare(queue: "q", passive: false, durable: true, exclusive: false, autoDelete: true))
      .encode(into: &buffer)
    // class 50, method 10, ticket 0, "q", bits: durable (2) | auto-delete (8), then an empty table.
    #expect(Array(buffer.readableBytesView) == [0, 50, 0, 10, 0, 0, 1, 0x71, 0b1010, 0, 0, 0, 0])
  }

  @Test("all 14 basic properties round-trip in a content header")
  func propertiesRoundTrip() throws {
    let properties = BasicProperties(
      contentType: "text/plain", contentEncoding: "gzip", headers: ["a": .longString("b"), "x": .bytes([0xFF, 0])],
      deliveryMode: 2, priority: 9, correlationId: "c", replyTo: "r", expiration: "60000", messageId: "m",
      timestamp: 1_700_000_000, type: "t", userId: "guest", appId: "app", clusterId: "cl")
    let header = ContentHeader(bodySize: 1 << 33, properties: properties)
    var buffer = ByteBuffer()
    buffer.writeAMQPFrame(.header(channel: 1, header))
    var decoder = AMQPFrameDecoder()
    guard case .header(1, let decoded) = try decoder.decodeFrame(&buffer) else {
      Issue.record("no header frame")
      return
    }
    #expect(decoded == header)
    #expect(decoded.rawProperties == header.rawProperties)
  }

  @Test("field tables keep every RabbitMQ type tag")
  func fieldTableTypes() throws {
    let table: FieldTable = [
      "t": .bool(true), "b": .int8(-1), "B": .uint8(255), "s": .int16(-300), "u": .uint16(65000),
      "I": .int32(-70000), "i": .uint32(4_000_000_000), "l": .int64(-1 << 40), "f": .float(1.5), "d": .double(-2.25),
      "D": .decimal(scale: 2, value: 12345), "S": .longString("héllo"), "A": .array([.longString("x"), .array([])]),
      "T": .timestamp(42), "F": .table(["inner": .int32(1)]), "V": .void, "x": .bytes([1, 2, 3]),
    ]
    var buffer = ByteBuffer()
    buffer.writeAMQPFieldTable(table)
    #expect(try buffer.readAMQPFieldTable() == table)
    #expect(buffer.readableBytes == 0)
  }

  @Test("the decoder passes ByteToMessageDecoderVerifier: whole, byte by byte, with junk around")
  func decoderVerifier() throws {
    let frames: [Frame] = [
      .method(channel: 0, .connectionTuneOk(ConnectionTuneOk(channelMax: 2047, frameMax: 131072, heartbeat: 60))),
      .method(channel: 1, .basicPublish(BasicPublish(exchange: "ex", routingKey: "rk", mandatory: true))),
      .header(channel: 1, ContentHeader(bodySize: 5, properties: BasicProperties(deliveryMode: 2))),
      .body(channel: 1, ByteBuffer(string: "hello")),
      .heartbeat(channel: 0),
    ]
    let pairs = frames.map { frame -> (ByteBuffer, [Frame]) in
      var buffer = ByteBuffer()
      buffer.writeAMQPFrame(frame)
      return (buffer, [frame])
    }
    try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
      AMQPFrameDecoder()
    }
  }

  @Test("frames fed one byte at a time come out whole")
  func byteByByte() throws {
    var all = ByteBuffer(bytes: amqpProtocolHeader)
    all.writeAMQPFrame(
      .method(channel: 0, .connectionStartOk(ConnectionStartOk(clientProperties: [:], response: [0, 0]))))
    all.writeAMQPFrame(.body(channel: 7, ByteBuffer(string: "xyz")))
    var decoder = AMQPFrameDecoder(expectsProtocolHeader: true)
    var accumulated = ByteBuffer()
    var out: [Frame] = []
    for byte in all.readableBytesView {
      accumulated.writeInteger(byte)
      while let frame = try decoder.decodeFrame(&accumulated) { out.append(frame) }
    }
    #expect(out.count == 3)
    #expect(out[0] == .protocolHeader(amqpProtocolHeader))
    #expect(out[2] == .body(channel: 7, ByteBuffer(string: "xyz")))
  }

  @Test("a wrong protocol header is reported as soon as it shows")
  func wrongProtocolHeader() throws {
    var decoder = AMQPFrameDecoder(expectsProtocolHeader: true)
    var buffer = ByteBuffer(string: "GET / HT")
    #expect(try decoder.decodeFrame(&buffer) == .protocolHeader(Array("GET / HT".utf8)))
    var partial = ByteBuffer(bytes: [0x41, 0x4D])
    var fresh = AMQPFrameDecoder(expectsProtocolHeader: true)
    #expect(try fresh.decodeFrame(&partial) == nil)
    var oldVersion = ByteBuffer(bytes: [0x41, 0x4D, 0x51, 0x50, 1, 1, 8, 0])
    #expect(try fresh.decodeFrame(&oldVersion) == .protocolHeader([0x41, 0x4D, 0x51, 0x50, 1, 1, 8, 0]))
  }

  @Test("a bad frame end is a frame error")
  func badFrameEnd() {
    var buffer = ByteBuffer()
    buffer.writeAMQPFrame(.heartbeat(channel: 0))
    buffer.setInteger(UInt8(0xAB), at: buffer.writerIndex - 1)
    var decoder = AMQPFrameDecoder()
    #expect(throws: AMQPProtocolError.badFrameEnd(0xAB)) { try decoder.decodeFrame(&buffer) }
  }

  @Test("an oversized frame is refused from its header alone, before its payload arrives")
  func oversizedFrame() {
    var buffer = ByteBuffer(bytes: [3, 0, 1, 0, 2, 0, 0])  // body frame of 131072 bytes, payload not sent
    var decoder = AMQPFrameDecoder(maxFrameSize: 131_072)
    #expect(throws: AMQPProtocolError.frameTooLarge(size: 131_072, max: 131_064)) {
      try decoder.decodeFrame(&buffer)
    }
  }

  @Test("a truncated field table is an error, not a crash")
  func truncatedTable() {
    var payload = ByteBuffer()
    AMQPMethod.exchangeDeclare(ExchangeDeclare(exchange: "e", arguments: ["k": .longString("value")]))
      .encode(into: &payload)
    // Claim a longer string inside the table than the table holds.
    let tableStart = payload.writerIndex - (4 + 1 + 1 + 1 + 4 + 5)
    payload.setInteger(UInt32(999), at: tableStart + 4 + 1 + 1 + 1)
    var frame = ByteBuffer()
    frame.writeInteger(UInt8(1))
    frame.writeInteger(UInt16(1))
    frame.writeInteger(UInt32(payload.readableBytes))
    frame.writeImmutableBuffer(payload)
    frame.writeInteger(amqpFrameEnd)
    var decoder = AMQPFrameDecoder()
    #expect(throws: AMQPProtocolError.truncated("long string")) { try decoder.decodeFrame(&frame) }
  }

  @Test("unknown class/method, unknown frame type and unknown field tag are errors")
  func unknowns() {
    var decoder = AMQPFrameDecoder()
    var unknownMethod = ByteBuffer(bytes: [1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE])
    #expect(throws: AMQPProtocolError.unknownMethod(classID: 99, methodID: 1)) {
      try decoder.decodeFrame(&unknownMethod)
    }
    var unknownType = ByteBuffer(bytes: [9, 0, 0, 0, 0, 0, 0, 0xCE])
    #expect(throws: AMQPProtocolError.unknownFrameType(9)) { try decoder.decodeFrame(&unknownType) }
    var table = ByteBuffer(bytes: [0, 0, 0, 3, 1, 0x6B, 0x5A])
    #expect(throws: AMQPProtocolError.unknownFieldType(0x5A)) { try table.readAMQPFieldTable() }
  }

  @Test("mutated frames never crash the decoder: each step decodes a frame, waits, or throws", arguments: [1, 2, 3])
  func fuzz(seed: UInt64) {
    var generator = SplitMix64(seed: seed)
    var valid = ByteBuffer()
    valid.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(exchange: "ex", routingKey: "rk"))))
    valid.writeAMQPFrame(
      .header(channel: 1, ContentHeader(bodySize: 3, properties: BasicProperties(headers: ["a": .int32(1)]))))
    valid.writeAMQPFrame(.body(channel: 1, ByteBuffer(string: "abc")))
    valid.writeAMQPFrame(
      .method(channel: 0, .connectionClose(ConnectionClose(replyCode: 200, replyText: "bye", classID: 0, methodID: 0))))
    let original = Array(valid.readableBytesView)
    var outcomes = (frames: 0, errors: 0)
    for _ in 0..<2000 {
      var bytes = original
      for _ in 0..<Int(generator.next() % 4 + 1) {
        bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
      }
      var buffer = ByteBuffer(bytes: bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1))))
      var decoder = AMQPFrameDecoder(maxFrameSize: 4096)
      while true {
        let before = buffer.readableBytes
        do {
          guard try decoder.decodeFrame(&buffer) != nil else {
            #expect(buffer.readableBytes == before)  // waiting for more consumes nothing
            break
          }
          #expect(buffer.readableBytes < before)  // a frame consumed its bytes
          outcomes.frames += 1
        } catch {
          outcomes.errors += 1
          break
        }
      }
    }
    // Both paths were exercised: mutations that still decode, and ones that are refused.
    #expect(outcomes.frames > 0 && outcomes.errors > 0)
  }

  @Test("body frames split a large body at frame_max")
  func bodySplitting() throws {
    let body = ByteBuffer(repeating: 0x61, count: 10_000)
    var buffer = ByteBuffer()
    buffer.writeAMQPBodyFrames(channel: 2, body: body, maxFrameSize: 4096)
    var decoder = AMQPFrameDecoder(maxFrameSize: 4096)
    var sizes: [Int] = []
    while let frame = try decoder.decodeFrame(&buffer) {
      guard case .body(2, let part) = frame else {
        Issue.record("not a body frame")
        return
      }
      sizes.append(part.readableBytes)
    }
    #expect(sizes == [4088, 4088, 1824])
  }
}

@Suite("Field tables")
struct FieldTableTests {
  @Test("tables compare as maps: order does not matter, values and keys do")
  func mapEquality() {
    let a: FieldTable = ["x": .int32(1), "y": .longString("b")]
    #expect(a == ["y": .longString("b"), "x": .int32(1)])
    #expect(a != ["x": .int32(1), "y": .longString("c")])
    #expect(a != ["x": .int32(1)])
    #expect(a != ["x": .int32(1), "z": .longString("b")])
  }
}

/// A small seeded generator, so a fuzz failure can be replayed.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { self.state = seed }
  mutating func next() -> UInt64 {
    self.state &+= 0x9E37_79B9_7F4A_7C15
    var z = self.state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
