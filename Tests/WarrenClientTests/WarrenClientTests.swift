import AMQPProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing
import WarrenClient
import WarrenCore
import WarrenServer

/// Runs `body` against a Warren broker started for the test on 127.0.0.1 port 0, or against the broker at
/// `WARREN_CLIENT_TEST_URL` when that is set (e.g. a RabbitMQ node: the same tests must pass there).
func withBroker(_ body: (String) async throws -> Void) async throws {
  if let url = ProcessInfo.processInfo.environment["WARREN_CLIENT_TEST_URL"] {
    try await body(url)
    return
  }
  let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
  let server = try await AMQPServer.start(
    host: "127.0.0.1", port: 0, eventLoop: group.next(), logger: Logger(label: "client-tests"),
    makeBroker: { Broker() })
  do {
    try await body("amqp://guest:guest@127.0.0.1:\(server.localAddress.port!)/")
  } catch {
    try? await server.shutdown()
    try? await group.shutdownGracefully()
    throw error
  }
  try await server.shutdown()
  try await group.shutdownGracefully()
}

func unique(_ prefix: String) -> String { "\(prefix)-\(UInt32.random(in: 0...UInt32.max))" }

@Suite("WarrenClient against a broker", .timeLimit(.minutes(1)))
struct WarrenClientTests {
  @Test("declare, publish with confirms, consume in order and acknowledge")
  func publishAndConsume() async throws {
    try await withBroker { url in
      let connection = try await AMQPConnection.connect(to: url, name: "client-test")
      let channel = try await connection.openChannel()
      let queue = try await channel.declareQueue("", exclusive: true).name
      #expect(queue.hasPrefix("amq.gen-"))
      try await channel.enableConfirms()
      for i in 0..<100 {
        try await channel.publish(
          "message \(i)", routingKey: queue,
          properties: BasicProperties(contentType: "text/plain", headers: ["i": .int32(Int32(i))]))
      }
      #expect(try await channel.declareQueue(queue, passive: true).messageCount == 100)
      let consumer = try await channel.consume(queue: queue)
      var received = 0
      for try await delivery in consumer {
        #expect(delivery.text == "message \(received)")
        #expect(delivery.properties.headers?["i"] == .int32(Int32(received)))
        #expect(delivery.consumerTag == consumer.tag)
        try await delivery.ack()
        received += 1
        if received == 100 { break }
      }
      try await consumer.cancel()
      #expect(try await channel.declareQueue(queue, passive: true).messageCount == 0)
      try await connection.close()
    }
  }

  @Test("a batch is published in one go and confirmed as a whole")
  func batch() async throws {
    try await withBroker { url in
      let connection = try await AMQPConnection.connect(to: url)
      let channel = try await connection.openChannel()
      let queue = try await channel.declareQueue("", exclusive: true).name
      try await channel.enableConfirms()
      let messages = (0..<500).map { AMQPChannel.OutgoingMessage(ByteBuffer(string: "\($0)"), routingKey: queue) }
      try await channel.publishBatch(messages)
      #expect(try await channel.declareQueue(queue, passive: true).messageCount == 500)
      await #expect(throws: AMQPClientError.self) {
        try await channel.publishBatch(
          [AMQPChannel.OutgoingMessage(ByteBuffer(string: "x"), routingKey: unique("nowhere"))], mandatory: true)
      }
      try await connection.close()
    }
  }

  @Test("basic.get, nack with requeue marks the message redelivered")
  func getAndNack() async throws {
    try await withBroker { url in
      let connection = try await AMQPConnection.connect(to: url)
      let channel = try await connection.openChannel()
      let queue = try await channel.declareQueue("", exclusive: true).name
      #expect(try await channel.get(queue: queue) == nil)
      try await channel.publish("once", routingKey: queue)
      let first = try #require(try await channel.get(queue: queue))
      #expect(first.text == "once" && !first.redelivered)
      try await first.nack(requeue: true)
      let second = try #require(try await channel.get(queue: queue, noAck: true))
      #expect(second.text == "once" && second.redelivered)
      try await connection.close()
    }
  }

  @Test("broker errors arrive as typed errors with the reply code; other channels go on")
  func errors() async throws {
    try await withBroker { url in
      let connection = try await AMQPConnection.connect(to: url)
      let broken = try await connection.openChannel()
      await #expect(
        throws: AMQPClientError.channelClosed(
          replyCode: 404, replyText: "NOT_FOUND - no queue 'missing-queue' in vhost '/'")
      ) {
        try await broken.declareQueue("missing-queue", passive: true)
      }
      #expect(await broken.isOpen == false)
      let healthy = try await connection.openChannel()
      let queue = try await healthy.declareQueue("", exclusive: true).name
      try await healthy.enableConfirms()
      do {
        try await healthy.publish("lost", routingKey: unique("nowhere"), mandatory: true)
        Issue.record("an unroutable mandatory message was confirmed")
      } catch AMQPClientError.unroutable(let code, let text) {
        #expect(code == 312 && text == "NO_ROUTE")
      }
      try await healthy.publish("kept", routingKey: queue, mandatory: true)
      #expect(try await healthy.get(queue: queue, noAck: true)?.text == "kept")
      try await connection.close()
    }
  }

  @Test("a wrong password is a connection error with 403")
  func wrongPassword() async throws {
    try await withBroker { url in
      let bad = url.replacingOccurrences(of: "guest:guest@", with: "guest:wrong@")
      do {
        _ = try await AMQPConnection.connect(to: bad)
        Issue.record("logged in with a wrong password")
      } catch AMQPClientError.connectionClosed(let code, _) {
        #expect(code == 403)
      }
    }
  }

  @Test("deleting the queue ends its consumer's sequence")
  func serverCancel() async throws {
    try await withBroker { url in
      let connection = try await AMQPConnection.connect(to: url)
      let channel = try await connection.openChannel()
      let queue = try await channel.declareQueue("", exclusive: true).name
      let consumer = try await channel.consume(queue: queue, noAck: true)
      try await connection.openChannel().deleteQueue(queue)
      var count = 0
      for try await _ in consumer { count += 1 }
      #expect(count == 0)
      try await connection.close()
    }
  }

  @Test("the simple layer: createExchange, createQueue, publish, subscribe")
  func simpleLayer() async throws {
    try await withBroker { url in
      let connection = try await AMQPConnection.connect(to: url)
      let exchange = unique("simple")
      let queue = unique("simple-q")
      try await connection.createExchange(name: exchange, type: "direct")
      try await connection.createQueue(name: queue, exchange: exchange)
      for line in ["one", "two", "three"] { try await connection.publish(line, to: queue, exchange: exchange) }
      let received = Received()
      let subscriber = Task {
        try await connection.subscribe(queue: queue) { delivery in
          if await received.add(delivery.text) == 3 { throw CancellationError() }
        }
      }
      _ = await subscriber.result
      #expect(await received.items == ["one", "two", "three"])
      let cleanup = try await connection.openChannel()
      try await cleanup.deleteQueue(queue)
      try await cleanup.deleteExchange(exchange)
      try await connection.close()
    }
  }

  @Test("AMQP URLs: credentials, port, vhost with %2F")
  func urls() async throws {
    await #expect(throws: AMQPClientError.badURL("http://x")) { _ = try await AMQPConnection.connect(to: "http://x") }
  }
}

actor Received {
  var items: [String] = []
  func add(_ item: String) -> Int {
    self.items.append(item)
    return self.items.count
  }
}
