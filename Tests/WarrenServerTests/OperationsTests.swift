import AMQPProtocol
import Logging
import NIOCore
import NIOPosix
import Testing
import WarrenCore
import WarrenHTTP
import WarrenMetrics
import WarrenServer

/// Resource alarms, metrics snapshots and the graceful drain, over real sockets.
@Suite("Operations: alarms, metrics, drain", .timeLimit(.minutes(1)))
struct OperationsTests {
  static let capabilities: FieldTable = [
    "capabilities": .table(["connection.blocked": .bool(true), "consumer_cancel_notify": .bool(true)])
  ]

  /// Sends a method on channel 1 and checks the name of the answer.
  func call(
    _ method: AMQPMethod, answered reply: String, _ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator,
    _ outbound: NIOAsyncChannelOutboundWriter<Frame>
  ) async throws {
    try await outbound.write(.method(channel: 1, method))
    #expect(try await frames.next()?.methodName == reply, "\(method.name)")
  }

  /// Publishes with one flush, so that the three frames arrive in one read (a message still arriving during an
  /// alarm blocks the connection before its end is read).
  func publish(_ body: String, to queue: String, _ outbound: NIOAsyncChannelOutboundWriter<Frame>) async throws {
    try await outbound.write(contentsOf: [
      .method(channel: 1, .basicPublish(BasicPublish(routingKey: queue))),
      .header(channel: 1, ContentHeader(bodySize: UInt64(body.utf8.count), properties: BasicProperties())),
      .body(channel: 1, ByteBuffer(string: body)),
    ])
  }

  @Test("a memory alarm sends connection.blocked, stops reading the publisher, and nothing is lost when it clears")
  func memoryAlarm() async throws {
    try await withServer { server, group in
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        #expect(
          try await client.handshake(inbound: &frames, outbound: outbound, clientProperties: Self.capabilities)?
            .methodName == "connection.open-ok")
        try await outbound.write(.method(channel: 1, .channelOpen(ChannelOpen())))
        #expect(try await frames.next() == .method(channel: 1, .channelOpenOk(ChannelOpenOk())))
        try await self.call(.queueDeclare(QueueDeclare(queue: "q")), answered: "queue.declare-ok", &frames, outbound)
        try await self.call(.confirmSelect(ConfirmSelect()), answered: "confirm.select-ok", &frames, outbound)

        // What the broker holds raises the alarm: a 20 kB message queued against a 10 kB watermark.
        try await self.publish(String(repeating: "x", count: 20_000), to: "q", outbound)
        #expect(try await frames.next() == .method(channel: 1, .basicAck(BasicAck(deliveryTag: 1))))
        #expect(try await server.heldBytes() > 20_000)
        try await server.updateResources(memoryLimit: 10_000, diskFreeLimit: 10, residentMemory: 1, diskFree: 1000)
        let (accepting, alarms) = try await server.readiness()
        #expect(accepting && alarms.memory && !alarms.disk)
        let reported = try await server.metricsSnapshot(perObject: false).alarms
        #expect(reported.memory)

        // The publish is taken and confirmed; the connection is then blocked: not read until the alarm clears.
        try await self.publish("one", to: "q", outbound)
        let afterOne = try await frames.next()
        #expect(afterOne == .method(channel: 1, .basicAck(BasicAck(deliveryTag: 2))), "\(String(describing: afterOne))")
        #expect(
          try await frames.next()
            == .method(channel: 0, .connectionBlocked(ConnectionBlocked(reason: "low on memory"))))
        try await self.publish("two", to: "q", outbound)

        // A purge frees what the broker held: the alarm clears at the next reading, though RSS would not have moved.
        let purged = try await server.withBroker { $0.vhosts["/"]!.queues["q"]!.purge() }
        #expect(purged == 2)
        try await server.updateResources(memoryLimit: 10_000, diskFreeLimit: 10, residentMemory: 1, diskFree: 1000)
        #expect(try await frames.next() == .method(channel: 0, .connectionUnblocked(ConnectionUnblocked())))
        #expect(try await frames.next() == .method(channel: 1, .basicAck(BasicAck(deliveryTag: 3))))
        let ready = try await server.withBroker { $0.vhosts["/"]!.queues["q"]!.messageCount }
        #expect(ready == 1)
        let cleared = try await server.readiness().alarms
        #expect(!cleared.any)
      }
    }
  }

  @Test("during an alarm, a connection streaming a body it has not finished is blocked too")
  func unfinishedBodyBlocked() async throws {
    try await withServer { server, group in
      // Resident memory over the backstop raises the alarm whatever the accounting says.
      try await server.updateResources(
        memoryLimit: 100, diskFreeLimit: 0, residentMemory: 1000, diskFree: 1000, heldBytes: 0)
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        #expect(
          try await client.handshake(inbound: &frames, outbound: outbound, clientProperties: Self.capabilities)?
            .methodName == "connection.open-ok")
        try await self.call(.channelOpen(ChannelOpen()), answered: "channel.open-ok", &frames, outbound)
        try await outbound.write(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "q"))))
        try await outbound.write(.header(channel: 1, ContentHeader(bodySize: 1_000_000, properties: .init())))
        try await outbound.write(.body(channel: 1, ByteBuffer(string: "only the start")))
        #expect(
          try await frames.next()
            == .method(channel: 0, .connectionBlocked(ConnectionBlocked(reason: "low on memory"))))
      }
    }
  }

  @Test("during a disk alarm a new connection works until it publishes, then is blocked")
  func diskAlarmAtOpen() async throws {
    try await withServer { server, group in
      try await server.updateResources(memoryLimit: 0, diskFreeLimit: 1000, residentMemory: 1, diskFree: 10)
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        let opened = try await client.handshake(
          inbound: &frames, outbound: outbound, clientProperties: Self.capabilities)
        #expect(opened == .method(channel: 0, .connectionOpenOk(ConnectionOpenOk())))
        try await outbound.write(.method(channel: 1, .channelOpen(ChannelOpen())))
        let channelOpened = try await frames.next()
        #expect(channelOpened == .method(channel: 1, .channelOpenOk(ChannelOpenOk())))
        try await self.publish("x", to: "nowhere", outbound)
        let blocked = try await frames.next()
        #expect(blocked == .method(channel: 0, .connectionBlocked(ConnectionBlocked(reason: "low on disk space"))))
      }
    }
  }

  @Test("a metrics snapshot counts what happened; a deleted queue leaves it")
  func snapshot() async throws {
    try await withServer { server, group in
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        #expect(try await client.handshake(inbound: &frames, outbound: outbound)?.methodName == "connection.open-ok")
        try await self.call(.channelOpen(ChannelOpen()), answered: "channel.open-ok", &frames, outbound)
        try await self.call(
          .queueDeclare(QueueDeclare(queue: "counted")), answered: "queue.declare-ok", &frames, outbound)
        try await self.call(.confirmSelect(ConfirmSelect()), answered: "confirm.select-ok", &frames, outbound)
        try await self.publish("12345", to: "counted", outbound)
        try await self.publish("x", to: "nowhere", outbound)
        var confirmed: UInt64 = 0
        while confirmed < 2 {
          guard case .method(1, .basicAck(let ack)) = try await frames.next() else {
            Issue.record("expected confirms")
            return
          }
          confirmed = ack.deliveryTag
        }
        var snapshot = try await server.metricsSnapshot(perObject: true)
        #expect(snapshot.counters.messagesReceived == 2 && snapshot.counters.messagesConfirmed == 2)
        #expect(snapshot.counters.messagesRouted == 1 && snapshot.counters.messagesUnroutableDropped == 1)
        #expect(snapshot.connectionCount == 1 && snapshot.channelCount == 1)
        let queue = snapshot.queues.first { $0.name == "counted" }
        #expect(queue?.ready == 1 && queue?.readyBytes == 5 && queue?.published == 1)
        #expect(snapshot.exchanges.first { $0.name == "" }?.published == 2)
        #expect(snapshot.connections.first?.bytesReceived ?? 0 > 0)

        try await self.call(.queueDelete(QueueDelete(queue: "counted")), answered: "queue.delete-ok", &frames, outbound)
        snapshot = try await server.metricsSnapshot(perObject: true)
        #expect(!snapshot.queues.contains { $0.name == "counted" })
        #expect(snapshot.queueCount == 0 && snapshot.counters.queuesDeleted == 1)
      }
    }
  }

  @Test("drain cancels consumers, confirms what was published, then closes with 320")
  func drain() async throws {
    try await withServer { server, group in
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        #expect(
          try await client.handshake(inbound: &frames, outbound: outbound, clientProperties: Self.capabilities)?
            .methodName == "connection.open-ok")
        try await self.call(.channelOpen(ChannelOpen()), answered: "channel.open-ok", &frames, outbound)
        try await self.call(.queueDeclare(QueueDeclare(queue: "d")), answered: "queue.declare-ok", &frames, outbound)
        try await outbound.write(.method(channel: 1, .basicConsume(BasicConsume(queue: "d", consumerTag: "c1"))))
        #expect(try await frames.next() == .method(channel: 1, .basicConsumeOk(BasicConsumeOk(consumerTag: "c1"))))
        try await self.call(.confirmSelect(ConfirmSelect()), answered: "confirm.select-ok", &frames, outbound)

        let draining = Task { try await server.drain(timeout: .seconds(10)) }
        #expect(
          try await frames.next() == .method(channel: 1, .basicCancel(BasicCancel(consumerTag: "c1", noWait: true))))
        // Still publishing after the cancel: the drain waits for it, confirms it, and only then closes.
        try await self.publish("late", to: "d", outbound)
        #expect(try await frames.next() == .method(channel: 1, .basicAck(BasicAck(deliveryTag: 1))))
        guard case .method(0, .connectionClose(let close)) = try await frames.next() else {
          Issue.record("expected connection.close")
          return
        }
        #expect(close.replyCode == 320)
        try await outbound.write(.method(channel: 0, .connectionCloseOk(ConnectionCloseOk())))
        try await draining.value
        let remaining = try await server.connectionCount()
        let readiness = try await server.readiness()
        #expect(remaining == 0 && !readiness.accepting)
      }
    }
  }
}
