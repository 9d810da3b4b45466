import AMQPProtocol
import Histogram
import NIOCore

#if canImport(Glibc)
  import Glibc
#endif

/// Sends a list of synchronous methods on channel 1, each after the previous one's reply.
/// Confined to its connection's event loop once connected; the runner reads it there.
final class SetupRole: PerfRole, @unchecked Sendable {
  private var pending: [AMQPMethod]
  let done: EventLoopPromise<Void>

  init(methods: [AMQPMethod], done: EventLoopPromise<Void>) {
    self.pending = methods
    self.done = done
  }

  func started(_ connection: PerfConnection, context: ChannelHandlerContext) {
    self.next(connection, context: context)
  }

  func received(_ frame: Frame, _ connection: PerfConnection, context: ChannelHandlerContext) {
    if case .method(1, _) = frame { self.next(connection, context: context) }
  }

  private func next(_ connection: PerfConnection, context: ChannelHandlerContext) {
    if self.pending.isEmpty {
      self.done.succeed(())
      return
    }
    connection.send(self.pending.removeFirst(), context: context)
  }
}

/// The first 16 bytes of every perf message: send time, sequence number, publisher, check.
enum PerfBody {
  static let headerSize = 16

  static func check(_ timestamp: UInt64, _ sequence: UInt32, _ publisher: UInt16) -> UInt16 {
    let mixed = timestamp ^ (UInt64(sequence) &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(publisher)
    return UInt16(truncatingIfNeeded: mixed ^ (mixed >> 16) ^ (mixed >> 32) ^ (mixed >> 48))
  }

  /// Byte `i` after the header is `(sequence + i) mod 256`: every 256 bytes are the same run of this table, from
  /// `sequence mod 256`, so bodies are written and checked a run at a time (`memcpy`, `memcmp`), not byte by byte
  /// (which was 12% of the load generator's CPU with 1 KiB messages).
  static let pattern: [UInt8] = (0..<512).map { UInt8(truncatingIfNeeded: $0) }

  /// Fills `destination` with the filler of `sequence`.
  static func fill(_ destination: UnsafeMutableRawBufferPointer, sequence: UInt32) {
    let start = Int(sequence & 0xff)
    self.pattern.withUnsafeBytes { pattern in
      var offset = 0
      while offset < destination.count {
        let run = min(256, destination.count - offset)
        (destination.baseAddress! + offset).copyMemory(from: pattern.baseAddress! + start, byteCount: run)
        offset += run
      }
    }
  }

  /// Whether `bytes` are the filler of `sequence`.
  static func isFill(_ bytes: UnsafeRawBufferPointer, sequence: UInt32) -> Bool {
    let start = Int(sequence & 0xff)
    return self.pattern.withUnsafeBytes { pattern in
      var offset = 0
      while offset < bytes.count {
        let run = min(256, bytes.count - offset)
        if memcmp(bytes.baseAddress! + offset, pattern.baseAddress! + start, run) != 0 { return false }
        offset += run
      }
      return true
    }
  }
}

/// Publishes as fast as allowed (by the confirm window, a fixed rate, a count), in batches per write, or each
/// publish in a write of its own (`unbatched`).
/// Confined to its connection's event loop once connected; the runner reads it there.
final class PublisherRole: PerfRole, @unchecked Sendable {
  let id: UInt16
  let size: Int
  let unbatched: Bool
  let confirmWindow: Int
  let rate: Double
  let limit: UInt64
  var running = true
  private(set) var published: UInt64 = 0
  private(set) var confirmed: UInt64 = 0
  private(set) var nacked: UInt64 = 0
  private(set) var returned: UInt64 = 0
  private var methodFrame = ByteBuffer()
  private var headerFrame = ByteBuffer()
  private var startedAt: NIODeadline = .now()
  private var scheduled = false
  private var bound: NIOLoopBound<PublisherRole>?
  private var frameMax = 131_072
  /// A body larger than a frame is assembled here, then cut into frames.
  private var largeBody = ByteBuffer()

  init(
    id: UInt16, exchange: String, routingKey: String, size: Int, persistent: Bool, mandatory: Bool,
    confirmWindow: Int, rate: Double, limit: UInt64, unbatched: Bool = false
  ) {
    self.id = id
    self.unbatched = unbatched
    self.size = max(size, PerfBody.headerSize)
    self.confirmWindow = confirmWindow
    self.rate = rate
    self.limit = limit
    self.methodFrame.writeAMQPMethodFrame(
      channel: 1, .basicPublish(BasicPublish(exchange: exchange, routingKey: routingKey, mandatory: mandatory)))
    var properties = ByteBuffer()
    BasicProperties(deliveryMode: persistent ? 2 : 1).encode(into: &properties)
    self.headerFrame.writeAMQPContentHeaderFrame(channel: 1, bodySize: UInt64(self.size), rawProperties: properties)
  }

  var isFinished: Bool {
    self.limit > 0 && self.published >= self.limit && (self.confirmWindow == 0 || self.confirmed >= self.published)
  }

  func started(_ connection: PerfConnection, context: ChannelHandlerContext) {
    self.frameMax = connection.frameMax
    self.bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    if self.confirmWindow > 0 {
      connection.send(.confirmSelect(ConfirmSelect()), context: context)
    } else {
      self.startPublishing(context: context)
    }
  }

  private func startPublishing(context: ChannelHandlerContext) {
    self.startedAt = .now()
    self.pump(context: context)
  }

  func received(_ frame: Frame, _ connection: PerfConnection, context: ChannelHandlerContext) {
    switch frame {
    case .method(1, .confirmSelectOk):
      self.startPublishing(context: context)
    case .method(1, .basicAck(let ack)):
      self.confirmed = ack.deliveryTag
      self.pump(context: context)
    case .method(1, .basicNack(let nack)):
      self.nacked += nack.multiple ? nack.deliveryTag - self.confirmed : 1
      self.confirmed = nack.deliveryTag
      self.pump(context: context)
    case .method(1, .basicReturn):
      self.returned += 1
    default:
      break
    }
  }

  func writable(_ connection: PerfConnection, context: ChannelHandlerContext) {
    self.pump(context: context)
  }

  /// Writes the next batch, then yields to the event loop (so acks are read) before the next.
  func pump(context: ChannelHandlerContext) {
    guard self.running, context.channel.isWritable else { return }
    var budget = 256
    if self.rate > 0 {
      let elapsed = Double((NIODeadline.now() - self.startedAt).nanoseconds) / 1e9
      budget = min(budget, Int(self.rate * elapsed) - Int(self.published))
    }
    if self.limit > 0 { budget = min(budget, Int(self.limit - min(self.limit, self.published))) }
    if self.confirmWindow > 0 { budget = min(budget, self.confirmWindow - Int(self.published - self.confirmed)) }
    if budget <= 0 {
      if self.rate > 0 && (self.limit == 0 || self.published < self.limit) {
        self.schedule(context, in: self.untilNextDue)
      }
      return
    }
    let frameSize = self.methodFrame.readableBytes + self.headerFrame.readableBytes + 8 + self.size
    var buffer = context.channel.allocator.buffer(capacity: (self.unbatched ? 1 : budget) * frameSize)
    var now = NIODeadline.now().uptimeNanoseconds
    for _ in 0..<budget {
      if self.unbatched && buffer.readableBytes > 0 {
        // One write per publish, as pika, the Java client or rabbitmq-c send them.
        context.writeAndFlush(NIOAny(buffer), promise: nil)
        buffer = context.channel.allocator.buffer(capacity: frameSize)
        now = NIODeadline.now().uptimeNanoseconds
      }
      self.published += 1
      let sequence = UInt32(truncatingIfNeeded: self.published)
      buffer.writeImmutableBuffer(self.methodFrame)
      buffer.writeImmutableBuffer(self.headerFrame)
      let oneFrame = self.size + 8 <= self.frameMax
      if oneFrame {
        buffer.writeInteger(UInt8(3))
        buffer.writeInteger(UInt16(1))
        buffer.writeInteger(UInt32(self.size))
        Self.writeBody(into: &buffer, size: self.size, now: now, sequence: sequence, publisher: self.id)
        buffer.writeInteger(amqpFrameEnd)
      } else {
        self.largeBody.clear()
        Self.writeBody(into: &self.largeBody, size: self.size, now: now, sequence: sequence, publisher: self.id)
        buffer.writeAMQPBodyFrames(channel: 1, body: self.largeBody, maxFrameSize: self.frameMax)
      }
    }
    context.writeAndFlush(NIOAny(buffer), promise: nil)
    if self.rate == 0 || budget == 256 {
      self.schedule(context, in: nil)
    } else {
      self.schedule(context, in: self.untilNextDue)
    }
  }

  /// With a fixed rate: the time until the next message is due, at least 1 ms (faster rates go in batches per
  /// millisecond). A slow publisher does not wake every millisecond: a thousand of them would keep the load
  /// generator's loops too busy to finish new connections' handshakes.
  private var untilNextDue: TimeAmount {
    let due = Double(self.published + 1) / self.rate
    let elapsed = Double((NIODeadline.now() - self.startedAt).nanoseconds) / 1e9
    return .nanoseconds(max(1_000_000, Int64((due - elapsed) * 1e9)))
  }

  /// A body: send time, sequence, publisher, check, then bytes the consumer can verify.
  private static func writeBody(
    into buffer: inout ByteBuffer, size: Int, now: UInt64, sequence: UInt32, publisher: UInt16
  ) {
    buffer.writeInteger(now)
    buffer.writeInteger(sequence)
    buffer.writeInteger(publisher)
    buffer.writeInteger(PerfBody.check(now, sequence, publisher))
    if size > PerfBody.headerSize {
      buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size - PerfBody.headerSize) { pointer in
        PerfBody.fill(
          UnsafeMutableRawBufferPointer(rebasing: pointer[..<(size - PerfBody.headerSize)]), sequence: sequence)
        return size - PerfBody.headerSize
      }
    }
  }

  private func schedule(_ context: ChannelHandlerContext, in delay: TimeAmount?) {
    guard !self.scheduled, let bound = self.bound else { return }
    self.scheduled = true
    let channel = context.channel
    let action: @Sendable () -> Void = {
      let publisher = bound.value
      publisher.scheduled = false
      guard let context = try? channel.pipeline.syncOperations.context(handlerType: PerfConnection.self) else {
        return
      }
      publisher.pump(context: context)
    }
    if let delay {
      context.eventLoop.scheduleTask(in: delay, action)
    } else {
      context.eventLoop.execute(action)
    }
  }
}

/// A growable set of sequence numbers.
struct SequenceSet {
  private var words: [UInt64] = []

  /// Inserts; returns false if it was there already.
  mutating func insert(_ n: UInt32) -> Bool {
    let word = Int(n >> 6)
    if word >= self.words.count {
      self.words.append(contentsOf: repeatElement(0, count: word - self.words.count + 1024))
    }
    let bit = UInt64(1) << UInt64(n & 63)
    if self.words[word] & bit != 0 { return false }
    self.words[word] |= bit
    return true
  }

  func contains(_ n: UInt32) -> Bool {
    let word = Int(n >> 6)
    return word < self.words.count && self.words[word] & (UInt64(1) << UInt64(n & 63)) != 0
  }

  var count: Int { self.words.reduce(0) { $0 + $1.nonzeroBitCount } }

  /// Adds another set; returns how many were in both.
  mutating func formUnion(_ other: SequenceSet) -> Int {
    var overlap = 0
    if other.words.count > self.words.count {
      self.words.append(contentsOf: repeatElement(0, count: other.words.count - self.words.count))
    }
    for (i, w) in other.words.enumerated() {
      overlap += (self.words[i] & w).nonzeroBitCount
      self.words[i] |= w
    }
    return overlap
  }
}

/// Consumes from one queue, checks every message, measures latency, acknowledges per read when asked.
/// Confined to its connection's event loop once connected; the runner reads it there.
final class ConsumerRole: PerfRole, @unchecked Sendable {
  let queue: String
  let manualAck: Bool
  let prefetch: UInt16
  var measuring = false
  private(set) var received: UInt64 = 0
  private(set) var duplicates: UInt64 = 0
  private(set) var corrupted: UInt64 = 0
  private(set) var histogram = Histogram<UInt64>(
    highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
  private(set) var seen: [UInt16: SequenceSet] = [:]
  private var lastTag: UInt64 = 0
  private var ackedTag: UInt64 = 0
  private var body: ByteBuffer?
  private var expected = 0
  let consuming: EventLoopPromise<Void>
  /// Acknowledge each delivery on its own, in a write of its own (otherwise once per read, with `multiple`).
  let ackEach: Bool

  init(queue: String, manualAck: Bool, prefetch: UInt16, consuming: EventLoopPromise<Void>, ackEach: Bool = false) {
    self.queue = queue
    self.manualAck = manualAck
    self.prefetch = prefetch
    self.consuming = consuming
    self.ackEach = ackEach
  }

  func started(_ connection: PerfConnection, context: ChannelHandlerContext) {
    if self.prefetch > 0 {
      connection.send(.basicQos(BasicQos(prefetchCount: self.prefetch)), context: context)
    }
    connection.send(.basicConsume(BasicConsume(queue: self.queue, noAck: !self.manualAck)), context: context)
  }

  func received(_ frame: Frame, _ connection: PerfConnection, context: ChannelHandlerContext) {
    switch frame {
    case .method(1, .basicDeliver(let deliver)):
      self.lastTag = deliver.deliveryTag
    case .header(1, let header):
      self.expected = Int(header.bodySize)
      self.body = nil
      if self.expected == 0 { self.corrupted += 1 }
    case .body(1, var part):
      if self.body == nil && part.readableBytes == self.expected {
        self.check(part)
      } else {
        if self.body == nil { self.body = ByteBuffer() }
        self.body!.writeBuffer(&part)
        guard self.body!.readableBytes >= self.expected else { return }
        self.check(self.body!)
        self.body = nil
      }
      if self.manualAck && self.ackEach {
        self.ackedTag = self.lastTag
        connection.send(.basicAck(BasicAck(deliveryTag: self.lastTag, multiple: false)), context: context)
      }
    case .method(1, .basicConsumeOk):
      self.consuming.succeed(())
    default:
      break
    }
  }

  private func check(_ body: ByteBuffer) {
    self.received += 1
    guard body.readableBytes >= PerfBody.headerSize,
      let timestamp = body.getInteger(at: body.readerIndex, as: UInt64.self),
      let sequence = body.getInteger(at: body.readerIndex + 8, as: UInt32.self),
      let publisher = body.getInteger(at: body.readerIndex + 12, as: UInt16.self),
      let check = body.getInteger(at: body.readerIndex + 14, as: UInt16.self),
      check == PerfBody.check(timestamp, sequence, publisher)
    else {
      self.corrupted += 1
      return
    }
    let intact = body.withUnsafeReadableBytes { pointer in
      PerfBody.isFill(UnsafeRawBufferPointer(rebasing: pointer[PerfBody.headerSize...]), sequence: sequence)
    }
    if !intact {
      self.corrupted += 1
      return
    }
    if !self.seen[publisher, default: SequenceSet()].insert(sequence) { self.duplicates += 1 }
    if self.measuring {
      let now = NIODeadline.now().uptimeNanoseconds
      _ = self.histogram.record(now > timestamp ? (now - timestamp) / 1000 : 0)
    }
  }

  func readComplete(_ connection: PerfConnection, context: ChannelHandlerContext) {
    if self.manualAck && !self.ackEach && self.lastTag > self.ackedTag {
      self.ackedTag = self.lastTag
      connection.send(.basicAck(BasicAck(deliveryTag: self.lastTag, multiple: true)), context: context)
    }
  }

  func resetHistogram() {
    self.histogram.reset()
  }
}

/// Publishes one message (to the default exchange, a queue that does not exist: dropped) and closes the
/// connection: one turn of connection churn.
/// Confined to its connection's event loop once connected.
final class ChurnRole: PerfRole, @unchecked Sendable {
  let closed: EventLoopPromise<Void>

  init(closed: EventLoopPromise<Void>) { self.closed = closed }

  func started(_ connection: PerfConnection, context: ChannelHandlerContext) {
    var buffer = context.channel.allocator.buffer(capacity: 128)
    buffer.writeAMQPMethodFrame(channel: 1, .basicPublish(BasicPublish(exchange: "", routingKey: "perf-churn")))
    buffer.writeAMQPContentHeaderFrame(channel: 1, bodySize: 16, rawProperties: ByteBuffer(bytes: [0, 0]))
    buffer.writeAMQPBodyFrames(channel: 1, body: ByteBuffer(repeating: 0, count: 16), maxFrameSize: connection.frameMax)
    buffer.writeAMQPMethodFrame(
      channel: 0, .connectionClose(ConnectionClose(replyCode: 200, replyText: "done", classID: 0, methodID: 0)))
    context.writeAndFlush(NIOAny(buffer), promise: nil)
  }

  func received(_ frame: Frame, _ connection: PerfConnection, context: ChannelHandlerContext) {
    if case .method(0, .connectionCloseOk) = frame { self.closed.succeed(()) }
  }
}

/// Holds a connection open and does nothing.
/// Confined to its connection's event loop once connected; the runner reads it there.
final class IdleRole: PerfRole, @unchecked Sendable {
  func started(_ connection: PerfConnection, context: ChannelHandlerContext) {}
  func received(_ frame: Frame, _ connection: PerfConnection, context: ChannelHandlerContext) {}
}
