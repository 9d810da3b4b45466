import AMQPProtocol
import Logging
import NIOCore
import NIOEmbedded
import Testing
import WarrenCore
import WarrenStore

@testable import WarrenServer

#if canImport(Glibc)
  import Glibc
#endif

/// Drives one connection handler on an EmbeddedChannel: bytes in, frames out, no sockets.
struct EmbeddedConnection {
  let channel: EmbeddedChannel
  let runtime: BrokerRuntime
  var decoder = AMQPFrameDecoder(maxFrameSize: 0)
  var received = ByteBuffer()

  init(broker: Broker = Broker()) throws {
    self.channel = EmbeddedChannel()
    self.runtime = BrokerRuntime(broker: broker, eventLoop: self.channel.embeddedEventLoop, logger: Logger(label: "t"))
    try self.channel.pipeline.syncOperations.addHandler(AMQPConnectionHandler(runtime: self.runtime))
    try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
  }

  /// A client's opening: protocol header, start-ok as guest (with `password`), and unless `open` is false, tune-ok
  /// and connection.open of `/`.
  static func opening(
    password: String = "guest", capabilities: FieldTable? = nil, channelMax: UInt16 = 10, frameMax: UInt32 = 4096,
    heartbeat: UInt16 = 0, open: Bool = true
  ) -> ByteBuffer {
    var bytes = ByteBuffer(bytes: amqpProtocolHeader)
    let properties: FieldTable = capabilities.map { ["capabilities": .table($0)] } ?? [:]
    bytes.writeAMQPFrame(
      .method(
        channel: 0,
        .connectionStartOk(
          ConnectionStartOk(
            clientProperties: properties, response: [0] + Array("guest".utf8) + [0] + Array(password.utf8)))))
    guard open else { return bytes }
    bytes.writeAMQPFrame(
      .method(
        channel: 0,
        .connectionTuneOk(ConnectionTuneOk(channelMax: channelMax, frameMax: frameMax, heartbeat: heartbeat))))
    bytes.writeAMQPFrame(.method(channel: 0, .connectionOpen(ConnectionOpen(virtualHost: "/"))))
    return bytes
  }

  /// Sends bytes in pieces of `chunk` bytes, each as its own read.
  func send(_ bytes: ByteBuffer, chunk: Int) throws {
    var bytes = bytes
    while bytes.readableBytes > 0 {
      let piece = bytes.readSlice(length: min(chunk, bytes.readableBytes))!
      try self.channel.writeInbound(piece)
      self.channel.pipeline.fireChannelReadComplete()
    }
  }

  /// Every frame the broker wrote so far.
  mutating func frames() throws -> [Frame] {
    while var out = try self.channel.readOutbound(as: ByteBuffer.self) { self.received.writeBuffer(&out) }
    var frames: [Frame] = []
    while let frame = try self.decoder.decodeFrame(&self.received) { frames.append(frame) }
    return frames
  }
}

@Suite("Connection handler, bytes in and frames out")
struct EmbeddedConnectionTests {
  static func script() -> ByteBuffer {
    var bytes = ByteBuffer(bytes: amqpProtocolHeader)
    let frames: [Frame] = [
      .method(
        channel: 0,
        .connectionStartOk(
          ConnectionStartOk(clientProperties: [:], response: [0] + Array("guest".utf8) + [0] + Array("guest".utf8)))),
      .method(channel: 0, .connectionTuneOk(ConnectionTuneOk(channelMax: 10, frameMax: 4096, heartbeat: 0))),
      .method(channel: 0, .connectionOpen(ConnectionOpen(virtualHost: "/"))),
      .method(channel: 1, .channelOpen(ChannelOpen())),
      .method(channel: 1, .queueDeclare(QueueDeclare(queue: "q"))),
      .method(channel: 1, .basicPublish(BasicPublish(routingKey: "q"))),
      .header(channel: 1, ContentHeader(bodySize: 10_000, properties: BasicProperties(messageId: "m1"))),
    ]
    for frame in frames { bytes.writeAMQPFrame(frame) }
    bytes.writeAMQPBodyFrames(channel: 1, body: ByteBuffer(repeating: 7, count: 10_000), maxFrameSize: 4096)
    bytes.writeAMQPFrame(.method(channel: 1, .basicGet(BasicGet(queue: "q", noAck: true))))
    return bytes
  }

  @Test("the same conversation whole, in pieces and byte by byte gives the same frames", arguments: [100_000, 7, 1])
  func chunked(chunk: Int) throws {
    var connection = try EmbeddedConnection()
    try connection.send(Self.script(), chunk: chunk)
    let frames = try connection.frames()
    guard frames.count == 10 else {
      Issue.record("expected 10 frames, got \(frames.count): \(frames)")
      return
    }
    guard case .method(0, .connectionStart) = frames[0] else {
      Issue.record("no start")
      return
    }
    #expect(frames[3] == .method(channel: 1, .channelOpenOk(ChannelOpenOk())))
    #expect(
      frames[4] == .method(channel: 1, .queueDeclareOk(QueueDeclareOk(queue: "q", messageCount: 0, consumerCount: 0))))
    #expect(
      frames[5]
        == .method(
          channel: 1,
          .basicGetOk(BasicGetOk(deliveryTag: 1, redelivered: false, exchange: "", routingKey: "q", messageCount: 0))))
    guard case .header(1, let header) = frames[6] else {
      Issue.record("no header")
      return
    }
    #expect(header.bodySize == 10_000 && header.properties.messageId == "m1")
    var body = ByteBuffer()
    for case .body(1, var part) in frames[7...] {
      #expect(part.readableBytes <= 4096 - 8)  // the negotiated frame_max
      body.writeBuffer(&part)
    }
    #expect(body == ByteBuffer(repeating: 7, count: 10_000))
  }

  @Test("malformed properties in a content header are a frame error")
  func malformedProperties() throws {
    var connection = try EmbeddedConnection()
    var bytes = ByteBuffer(bytes: amqpProtocolHeader)
    bytes.writeAMQPFrame(
      .method(
        channel: 0,
        .connectionStartOk(
          ConnectionStartOk(clientProperties: [:], response: [0] + Array("guest".utf8) + [0] + Array("guest".utf8)))))
    bytes.writeAMQPFrame(
      .method(channel: 0, .connectionTuneOk(ConnectionTuneOk(channelMax: 10, frameMax: 4096, heartbeat: 0))))
    bytes.writeAMQPFrame(.method(channel: 0, .connectionOpen(ConnectionOpen(virtualHost: "/"))))
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "q"))))
    // Flags announce a content type (a short string) of 200 bytes; only 3 follow.
    bytes.writeBytes([2, 0, 1, 0, 0, 0, 0, 21, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x80, 0, 200, 1, 2, 0xCE])
    try connection.send(bytes, chunk: 1000)
    let frames = try connection.frames()
    guard case .method(0, .connectionClose(let close)) = frames.last else {
      Issue.record("no connection.close")
      return
    }
    #expect(close.replyCode == 501)
  }
}

/// Timeouts with the embedded loop's manual clock: no real time passes.
@Suite("Connection timeouts on a manual clock")
struct ConnectionTimeoutTests {
  @Test("a client that does not finish the handshake within 10 s is closed, not before")
  func handshakeTimeout() throws {
    var connection = try EmbeddedConnection()
    try connection.send(ByteBuffer(bytes: amqpProtocolHeader), chunk: 8)
    #expect(try connection.frames().count == 1)  // connection.start
    connection.channel.embeddedEventLoop.advanceTime(by: .seconds(9))
    #expect(connection.channel.isActive)
    connection.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
    #expect(!connection.channel.isActive)
  }

  @Test("heartbeats: sent when the broker is idle, the client closed after two silent intervals")
  func heartbeats() throws {
    var connection = try EmbeddedConnection()
    try connection.send(EmbeddedConnection.opening(heartbeat: 2), chunk: 1000)
    #expect(try connection.frames().last == .method(channel: 0, .connectionOpenOk(ConnectionOpenOk())))
    let loop = connection.channel.embeddedEventLoop
    loop.advanceTime(by: .seconds(1))  // first tick: the open-ok went out, so no heartbeat yet
    #expect(try connection.frames().isEmpty)
    loop.advanceTime(by: .seconds(1))
    #expect(try connection.frames() == [.heartbeat(channel: 0)])
    try connection.send(ByteBuffer(bytes: [8, 0, 0, 0, 0, 0, 0, 0xCE]), chunk: 8)  // the client's heartbeat
    loop.advanceTime(by: .seconds(4))  // the tick at 3 s sees it; silent ticks at 4, 5, 6 s
    #expect(connection.channel.isActive)
    loop.advanceTime(by: .seconds(1))  // the fourth silent tick (two intervals without a byte): closed
    #expect(!connection.channel.isActive)
  }
}

@Suite("Hardening, bytes in and frames out")
struct HardeningEmbeddedTests {
  static let failureClose: FieldTable = ["authentication_failure_close": .bool(true)]

  @Test("a refused login is told with 403 and the socket stays open for close-ok, at most 3 s")
  func refusedLoginWaitsForCloseOk() throws {
    var connection = try EmbeddedConnection()
    try connection.send(
      EmbeddedConnection.opening(password: "wrong", capabilities: Self.failureClose, open: false), chunk: 1000)
    guard case .method(0, .connectionClose(let close)) = try connection.frames().last else {
      Issue.record("no connection.close")
      return
    }
    #expect(close.replyCode == 403)
    connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2900))
    #expect(connection.channel.isActive)
    connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
    #expect(!connection.channel.isActive)

    let answered = try EmbeddedConnection()
    try answered.send(
      EmbeddedConnection.opening(password: "wrong", capabilities: Self.failureClose, open: false), chunk: 1000)
    var closeOk = ByteBuffer()
    closeOk.writeAMQPFrame(.method(channel: 0, .connectionCloseOk(ConnectionCloseOk())))
    try answered.send(closeOk, chunk: 100)
    answered.channel.embeddedEventLoop.run()
    #expect(!answered.channel.isActive)
  }

  static func opened() -> ByteBuffer { EmbeddedConnection.opening(channelMax: 0, frameMax: 131_072) }

  @Test("channel_max limits how many channels are open, not their numbers (as RabbitMQ)")
  func channelMaxCountsChannels() throws {
    var connection = try EmbeddedConnection()
    var bytes = Self.opened()
    bytes.writeAMQPFrame(.method(channel: 65535, .channelOpen(ChannelOpen())))
    try connection.send(bytes, chunk: 10_000)
    #expect(try connection.frames().last == .method(channel: 65535, .channelOpenOk(ChannelOpenOk())))
  }

  @Test("a header declaring 128 MiB followed by one byte holds one byte, not 128 MiB; the channel still works")
  func declaredBodySizeIsNotReserved() throws {
    let connection = try EmbeddedConnection()
    var bytes = Self.opened()
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "nowhere"))))
    bytes.writeAMQPFrame(.header(channel: 1, ContentHeader(bodySize: 128 << 20, properties: .init())))
    bytes.writeAMQPFrame(.body(channel: 1, ByteBuffer(string: "x")))
    bytes.writeAMQPFrame(.body(channel: 1, ByteBuffer(string: "y")))
    try connection.send(bytes, chunk: 10_000)
    let held = try connection.channel.pipeline.syncOperations.handler(type: AMQPConnectionHandler.self).bufferedBytes
    #expect(held < 4096)
  }

  @Test("a publish to an exchange the user may not write is refused at basic.publish, before its body")
  func permissionCheckedAtPublish() throws {
    var connection = try EmbeddedConnection()
    var bytes = Self.opened()
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(exchange: "missing", routingKey: "k"))))
    try connection.send(bytes, chunk: 10_000)
    guard case .method(1, .channelClose(let close)) = try connection.frames().last else {
      Issue.record("not refused before the content")
      return
    }
    #expect(close.replyCode == 404 && close.replyText == "NOT_FOUND - no exchange 'missing' in vhost '/'")
    // The content that follows is dropped; close-ok frees the channel for a new open.
    var rest = ByteBuffer()
    rest.writeAMQPFrame(.header(channel: 1, ContentHeader(bodySize: 100 << 20, properties: .init())))
    rest.writeAMQPFrame(.body(channel: 1, ByteBuffer(repeating: 0, count: 1000)))
    rest.writeAMQPFrame(.method(channel: 1, .channelCloseOk(ChannelCloseOk())))
    rest.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    try connection.send(rest, chunk: 10_000)
    #expect(try connection.frames() == [.method(channel: 1, .channelOpenOk(ChannelOpenOk()))])
  }

  @Test("user_id must be the authenticated user (406, as RabbitMQ)")
  func userIDChecked() throws {
    var connection = try EmbeddedConnection()
    var bytes = Self.opened()
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "q"))))
    for user in ["guest", "mallory"] {
      bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "q"))))
      bytes.writeAMQPFrame(.header(channel: 1, ContentHeader(bodySize: 1, properties: BasicProperties(userId: user))))
      bytes.writeAMQPFrame(.body(channel: 1, ByteBuffer(string: "m")))
    }
    try connection.send(bytes, chunk: 10_000)
    guard case .method(1, .channelClose(let close)) = try connection.frames().last else {
      Issue.record("user_id not checked")
      return
    }
    #expect(
      close.replyText == "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'")
  }
}

/// A queue storage whose appends wait for a storage token, as a durable store's do until its sync completes.
final class TokenStorage: QueueStorage {
  let memory = InMemoryQueueStorage()
  var generation: UInt64 = 0
  var count: Int { self.memory.count }
  var bytes: Int { self.memory.bytes }
  func append(_ message: QueuedMessage) {
    self.generation += 1
    self.memory.append(message)
  }
  func removeFirst() -> QueuedMessage? { self.memory.removeFirst() }
  func head() -> QueuedMessage? { self.memory.head() }
  func requeue(_ messages: [QueuedMessage]) { self.memory.requeue(messages) }
  func purge() -> Int { self.memory.purge() }
  var pendingToken: StorageToken? { StorageToken(generation: self.generation) }
}

@Suite("Confirms that wait for storage")
struct StorageConfirmTests {
  @Test("a publish to a queue whose storage must sync is confirmed when its token completes, in order")
  func confirmAfterSync() throws {
    let broker = Broker()
    let storage = TokenStorage()
    broker.vhosts["/"]!.makeQueueStorage = { name, _ in
      name == "durable" ? storage as any QueueStorage : InMemoryQueueStorage()
    }
    var connection = try EmbeddedConnection(broker: broker)
    var bytes = EmbeddedConnection.opening(frameMax: 131_072)
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "durable", durable: true))))
    bytes.writeAMQPFrame(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "memory"))))
    bytes.writeAMQPFrame(.method(channel: 1, .confirmSelect(ConfirmSelect())))
    for queue in ["durable", "durable", "memory"] {
      bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(routingKey: queue))))
      bytes.writeAMQPFrame(.header(channel: 1, ContentHeader(bodySize: 1, properties: .init())))
      bytes.writeAMQPFrame(.body(channel: 1, ByteBuffer(string: "m")))
    }
    try connection.send(bytes, chunk: 100_000)
    let before = try connection.frames().filter { if case .method(1, .basicAck) = $0 { true } else { false } }
    #expect(before.isEmpty)  // 1 and 2 wait for the sync, and 3 behind them
    connection.runtime.storageCompleted(upTo: StorageToken(generation: 1))
    #expect(try connection.frames() == [.method(channel: 1, .basicAck(BasicAck(deliveryTag: 1)))])
    connection.runtime.storageCompleted(upTo: StorageToken(generation: 2))
    #expect(try connection.frames() == [.method(channel: 1, .basicAck(BasicAck(deliveryTag: 3, multiple: true)))])
  }
}

@Suite("Confirms from the message store")
struct MessageStoreConfirmTests {
  static func open(_ system: SimulatedFileSystem) throws -> (Broker, BrokerPersistence) {
    let persistence = try BrokerPersistence.open(
      directory: "/data", fileSystem: system, lock: false, logger: Logger(label: "test"))
    let broker = Broker()
    persistence.recover(into: broker)
    try persistence.attach(to: broker)
    return (broker, persistence)
  }

  static func publish(_ body: String, persistent: Bool = true) -> ByteBuffer {
    var bytes = ByteBuffer()
    var properties = BasicProperties()
    properties.deliveryMode = persistent ? 2 : 1
    bytes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "durable"))))
    bytes.writeAMQPFrame(.header(channel: 1, ContentHeader(bodySize: UInt64(body.utf8.count), properties: properties)))
    bytes.writeAMQPFrame(.body(channel: 1, ByteBuffer(string: body)))
    return bytes
  }

  @Test("acked publishes and the declared queue survive a power cut; a publish whose sync failed is nacked")
  func ackedSurvivesPowerCut() throws {
    let system = SimulatedFileSystem()
    let (broker, persistence) = try Self.open(system)
    var connection = try EmbeddedConnection(broker: broker)
    connection.runtime.store = persistence.store
    var bytes = EmbeddedConnection.opening(frameMax: 131_072)
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "durable", durable: true))))
    bytes.writeAMQPFrame(.method(channel: 1, .confirmSelect(ConfirmSelect())))
    try connection.send(bytes, chunk: 100_000)
    #expect(try connection.frames().contains { if case .method(1, .queueDeclareOk) = $0 { true } else { false } })

    try connection.send(Self.publish("one"), chunk: 100_000)
    #expect(try connection.frames() == [.method(channel: 1, .basicAck(BasicAck(deliveryTag: 1)))])
    system.failSyncs = EIO
    try connection.send(Self.publish("two"), chunk: 100_000)
    #expect(try connection.frames() == [.method(channel: 1, .basicNack(BasicNack(deliveryTag: 2, requeue: false)))])
    system.failSyncs = nil
    try connection.send(Self.publish("three"), chunk: 100_000)
    try connection.send(Self.publish("transient", persistent: false), chunk: 100_000)
    #expect(
      try connection.frames() == [
        .method(channel: 1, .basicAck(BasicAck(deliveryTag: 3))),
        .method(channel: 1, .basicAck(BasicAck(deliveryTag: 4))),
      ])

    system.powerCut()
    let (recovered, _) = try Self.open(system)
    let queue = try #require(recovered.vhosts["/"]?.queues["durable"])
    var bodies: [String] = []
    while let message = queue.get(noAck: true) { bodies.append(String(buffer: message.message.body)) }
    #expect(bodies == ["one", "three"])
  }
}

@Suite("Sync results in the middle of a read")
struct SyncResultsMidReadTests {
  @Test("a sync finishing during a read releases its confirm before the read ends; the read's end commits")
  func confirmReleasedMidRead() throws {
    let system = SimulatedFileSystem()
    let (broker, persistence) = try MessageStoreConfirmTests.open(system)
    var connection = try EmbeddedConnection(broker: broker)
    let runtime = connection.runtime
    runtime.store = persistence.store
    var held: [SyncBatch] = []
    runtime.runSyncElsewhere = { held.append($0) }
    /// What a sync thread does: run the batch, then post its result.
    func finish(_ batch: SyncBatch) { runtime.syncResults.post(batch, error: batch.runCapturingError()) }

    var bytes = EmbeddedConnection.opening(frameMax: 131_072)
    bytes.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    bytes.writeAMQPFrame(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "durable", durable: true))))
    bytes.writeAMQPFrame(.method(channel: 1, .confirmSelect(ConfirmSelect())))
    try connection.send(bytes, chunk: 100_000)
    #expect(held.count == 1)  // the queue's declaration waits for its sync
    finish(held[0])
    runtime.takeSyncResults()  // the task a sync thread queues on the loop
    #expect(try connection.frames().contains { if case .method(1, .confirmSelectOk) = $0 { true } else { false } })

    try connection.send(MessageStoreConfirmTests.publish("one"), chunk: 100_000)
    connection.channel.embeddedEventLoop.run()  // what the loop runs after a read, before the next one
    #expect(held.count == 2)
    #expect(try connection.frames() == [])
    finish(held[1])

    // The next publish arrives before the loop ran the sync's task: the read sees the result after the message.
    connection.channel.pipeline.fireChannelRead(MessageStoreConfirmTests.publish("two"))
    #expect(try connection.frames() == [.method(channel: 1, .basicAck(BasicAck(deliveryTag: 1)))])
    #expect(held.count == 2)  // "two" is committed when the read ends, not in the middle of it
    connection.channel.pipeline.fireChannelReadComplete()
    #expect(held.count == 3)
    #expect(try connection.frames() == [])
    finish(held[2])
    runtime.takeSyncResults()
    #expect(try connection.frames() == [.method(channel: 1, .basicAck(BasicAck(deliveryTag: 2)))])
  }
}
