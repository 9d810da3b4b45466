import AMQPProtocol
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import WarrenCore
import WarrenServer
import WarrenStore

/// The whole broker in one process without sockets: a publisher connection with confirms and a consumer connection
/// with manual acks on `EmbeddedChannel`s, the message store in a fresh directory in `/dev/shm` (memory: its syncs
/// cost no waiting, its writes still cost the system calls), synced inline. Each round is one read of `batch`
/// publishes, the deliveries they cause, and one multiple ack of them: what the broker does per message, without
/// the network and without the load generator's noise.
struct EndToEnd {
  let loop = EmbeddedEventLoop()
  let publisher: EmbeddedChannel
  let consumer: EmbeddedChannel
  let broker: EmbeddedBroker
  let publishes: ByteBuffer
  let batch: Int
  let directory: String
  var acked: UInt64 = 0
  var delivered = 0

  init(persistent: Bool, bodySize: Int, batch: Int) throws {
    let directory = Self.temporaryDirectory()
    self.directory = directory
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    let persistence = try BrokerPersistence.open(directory: directory, lock: false, logger: logger)
    let core = Broker()
    persistence.recover(into: core)
    try persistence.attach(to: core)
    self.broker = EmbeddedBroker(broker: core, eventLoop: self.loop, logger: logger, store: persistence.store)
    self.publisher = EmbeddedChannel(loop: self.loop)
    self.consumer = EmbeddedChannel(loop: self.loop)
    self.batch = batch
    for channel in [self.publisher, self.consumer] {
      try self.broker.addConnection(to: channel)
      try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
    }
    var setup = Self.opening()
    setup.writeAMQPFrame(.method(channel: 1, .channelOpen(ChannelOpen())))
    setup.writeAMQPFrame(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "bench", durable: persistent))))
    var publisherSetup = setup
    publisherSetup.writeAMQPFrame(.method(channel: 1, .confirmSelect(ConfirmSelect())))
    try Self.send(publisherSetup, to: self.publisher)
    var consumerSetup = setup
    consumerSetup.writeAMQPFrame(.method(channel: 1, .basicQos(BasicQos(prefetchCount: UInt16(min(batch * 4, 65535))))))
    consumerSetup.writeAMQPFrame(.method(channel: 1, .basicConsume(BasicConsume(queue: "bench", consumerTag: "c"))))
    try Self.send(consumerSetup, to: self.consumer)
    Self.drain(self.publisher)
    Self.drain(self.consumer)

    var properties = BasicProperties()
    properties.deliveryMode = persistent ? 2 : 1
    var publishes = ByteBuffer()
    for _ in 0..<batch {
      publishes.writeAMQPFrame(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "bench"))))
      publishes.writeAMQPFrame(.header(channel: 1, ContentHeader(bodySize: UInt64(bodySize), properties: properties)))
      publishes.writeAMQPFrame(.body(channel: 1, ByteBuffer(repeating: 7, count: bodySize)))
    }
    self.publishes = publishes
  }

  /// One read of publishes, then one read of the consumer's ack of everything delivered.
  mutating func round() throws {
    try Self.send(self.publishes, to: self.publisher)
    self.delivered += Self.drain(self.consumer)
    self.acked += UInt64(self.batch)
    var ack = ByteBuffer()
    ack.writeAMQPFrame(.method(channel: 1, .basicAck(BasicAck(deliveryTag: self.acked, multiple: true))))
    try Self.send(ack, to: self.consumer)
    Self.drain(self.publisher)
  }

  /// A new empty directory in memory (`/dev/shm`, else `/tmp`).
  static func temporaryDirectory() -> String {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    var template = Array("\(base)/warren-microbench-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
  }

  /// Removes the store's directory.
  func remove() {
    try? FileManager.default.removeItem(atPath: self.directory)
  }

  static func send(_ bytes: ByteBuffer, to channel: EmbeddedChannel) throws {
    try channel.writeInbound(bytes)
    channel.pipeline.fireChannelReadComplete()
  }

  /// Reads what the broker wrote; returns the bytes.
  @discardableResult static func drain(_ channel: EmbeddedChannel) -> Int {
    var bytes = 0
    while let out = try? channel.readOutbound(as: ByteBuffer.self) { bytes += out.readableBytes }
    return bytes
  }

  static func opening() -> ByteBuffer {
    var bytes = ByteBuffer(bytes: amqpProtocolHeader)
    let response = [0] + Array("guest".utf8) + [0] + Array("guest".utf8)
    bytes.writeAMQPFrame(
      .method(channel: 0, .connectionStartOk(ConnectionStartOk(clientProperties: [:], response: response))))
    bytes.writeAMQPFrame(
      .method(channel: 0, .connectionTuneOk(ConnectionTuneOk(channelMax: 10, frameMax: 131_072, heartbeat: 0))))
    bytes.writeAMQPFrame(.method(channel: 0, .connectionOpen(ConnectionOpen(virtualHost: "/"))))
    return bytes
  }
}
