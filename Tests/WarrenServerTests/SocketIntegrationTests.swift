import AMQPProtocol
import Logging
import NIOCore
import NIOPosix
import Testing
import WarrenCore
import WarrenServer

/// Runs `body` with a broker listening on 127.0.0.1 (a free port) and an event loop group for clients; shuts both
/// down afterwards, whether `body` throws or not. With `connectionLoops` the sockets live on loops of their own and
/// hand their bytes to the broker's loop.
func withServer(
  connectionLoops: Bool = false, _ body: (AMQPServer, any EventLoopGroup) async throws -> Void
) async throws {
  let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
  let socketLoops = connectionLoops ? MultiThreadedEventLoopGroup(numberOfThreads: 2) : nil
  let server = try await AMQPServer.start(
    listeners: [AMQPListener(name: "AMQP", host: "127.0.0.1", port: 0, connectionLoops: socketLoops)],
    eventLoop: group.next(), logger: Logger(label: "test"), makeBrokerAndStore: { (Broker(), nil) })
  do {
    try await body(server, group)
  } catch {
    try await server.shutdown()
    try await socketLoops?.shutdownGracefully()
    try await group.shutdownGracefully()
    throw error
  }
  try await server.shutdown()
  try await socketLoops?.shutdownGracefully()
  try await group.shutdownGracefully()
}

/// A frame-level client over a real socket, for scripting exact exchanges with the broker.
struct FrameClient {
  let channel: NIOAsyncChannel<Frame, Frame>

  static func connect(to address: SocketAddress, group: any EventLoopGroup) async throws -> FrameClient {
    let channel = try await ClientBootstrap(group: group).connect(to: address) { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(AMQPFrameDecoder(maxFrameSize: 0)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(AMQPFrameEncoder()))
        return try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
      }
    }
    return FrameClient(channel: channel)
  }

  /// Runs the handshake and returns the negotiated tune.
  func handshake(
    inbound: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator,
    outbound: NIOAsyncChannelOutboundWriter<Frame>,
    password: String = "guest",
    clientProperties: FieldTable = [:]
  ) async throws -> Frame? {
    try await outbound.write(.protocolHeader(amqpProtocolHeader))
    guard case .method(0, .connectionStart) = try await inbound.next() else { return nil }
    try await outbound.write(
      .method(
        channel: 0,
        .connectionStartOk(
          ConnectionStartOk(
            clientProperties: clientProperties, response: [0] + Array("guest".utf8) + [0] + Array(password.utf8)))))
    let tune = try await inbound.next()
    guard case .method(0, .connectionTune(let t)) = tune else { return tune }
    try await outbound.write(
      .method(
        channel: 0, .connectionTuneOk(ConnectionTuneOk(channelMax: t.channelMax, frameMax: t.frameMax, heartbeat: 0))))
    try await outbound.write(.method(channel: 0, .connectionOpen(ConnectionOpen(virtualHost: "/"))))
    return try await inbound.next()
  }
}

@Suite("Broker over real sockets", .timeLimit(.minutes(1)))
struct SocketIntegrationTests {
  @Test(
    "handshake, declare, confirmed publish, consume: the exact frames (sockets on the broker's loop or their own)",
    arguments: [false, true])
  func publishAndConsume(connectionLoops: Bool) async throws {
    try await withServer(connectionLoops: connectionLoops) { server, group in
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        #expect(
          try await client.handshake(inbound: &frames, outbound: outbound)
            == .method(channel: 0, .connectionOpenOk(ConnectionOpenOk())))
        try await outbound.write(.method(channel: 1, .channelOpen(ChannelOpen())))
        #expect(try await frames.next() == .method(channel: 1, .channelOpenOk(ChannelOpenOk())))
        try await outbound.write(.method(channel: 1, .queueDeclare(QueueDeclare(queue: "it"))))
        #expect(
          try await frames.next()
            == .method(channel: 1, .queueDeclareOk(QueueDeclareOk(queue: "it", messageCount: 0, consumerCount: 0))))
        try await outbound.write(.method(channel: 1, .confirmSelect(ConfirmSelect())))
        #expect(try await frames.next() == .method(channel: 1, .confirmSelectOk(ConfirmSelectOk())))
        let properties = BasicProperties(contentType: "text/plain", headers: ["n": .int32(7)])
        for body in ["one", "two"] {
          try await outbound.write(.method(channel: 1, .basicPublish(BasicPublish(routingKey: "it"))))
          try await outbound.write(
            .header(channel: 1, ContentHeader(bodySize: UInt64(body.utf8.count), properties: properties)))
          try await outbound.write(.body(channel: 1, ByteBuffer(string: body)))
        }
        // Two publishes in one read may be confirmed by one ack with multiple.
        var confirmed: UInt64 = 0
        while confirmed < 2 {
          guard case .method(1, .basicAck(let ack)) = try await frames.next() else {
            Issue.record("expected basic.ack")
            return
          }
          #expect(ack.deliveryTag > confirmed)
          confirmed = ack.deliveryTag
        }
        try await outbound.write(.method(channel: 1, .basicConsume(BasicConsume(queue: "it", consumerTag: "ct"))))
        #expect(try await frames.next() == .method(channel: 1, .basicConsumeOk(BasicConsumeOk(consumerTag: "ct"))))
        for (tag, body) in [(UInt64(1), "one"), (2, "two")] {
          #expect(
            try await frames.next()
              == .method(
                channel: 1,
                .basicDeliver(
                  BasicDeliver(consumerTag: "ct", deliveryTag: tag, redelivered: false, exchange: "", routingKey: "it"))
              ))
          guard case .header(1, let header) = try await frames.next() else {
            Issue.record("expected a content header")
            return
          }
          #expect(header.properties == properties)
          #expect(try await frames.next() == .body(channel: 1, ByteBuffer(string: body)))
        }
        try await outbound.write(
          .method(channel: 0, .connectionClose(ConnectionClose(replyCode: 200, classID: 0, methodID: 0))))
        #expect(try await frames.next() == .method(channel: 0, .connectionCloseOk(ConnectionCloseOk())))
      }
      // The unacked deliveries went back to the queue when the connection closed.
      let count = try await server.withBroker { broker in broker.vhosts["/"]!.queues["it"]!.messageCount }
      #expect(count == 2)
    }
  }

  @Test("a wrong password gets 403 and the socket closes")
  func wrongPassword() async throws {
    try await withServer { server, group in
      let client = try await FrameClient.connect(to: server.localAddress, group: group)
      try await client.channel.executeThenClose { inbound, outbound in
        var frames = inbound.makeAsyncIterator()
        // Without authentication_failure_close the broker just closes: the stream ends (a silent broker would hit
        // the time limit instead of passing).
        let reply = try await client.handshake(inbound: &frames, outbound: outbound, password: "wrong")
        #expect(reply == nil)
        #expect(try await frames.next() == nil)
      }
    }
  }

  @Test("shutdown closes client connections with 320 CONNECTION_FORCED")
  func shutdownForcesClose() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await AMQPServer.start(
      host: "127.0.0.1", port: 0, eventLoop: group.next(), logger: Logger(label: "test"), makeBroker: { Broker() })
    let client = try await FrameClient.connect(to: server.localAddress, group: group)
    try await client.channel.executeThenClose { inbound, outbound in
      var frames = inbound.makeAsyncIterator()
      #expect(try await client.handshake(inbound: &frames, outbound: outbound)?.methodName == "connection.open-ok")
      try await server.shutdown(reason: "bye")
      guard case .method(0, .connectionClose(let close)) = try await frames.next() else {
        Issue.record("expected connection.close")
        return
      }
      #expect(close.replyCode == 320)
      #expect(close.replyText == "CONNECTION_FORCED - bye")
      try await outbound.write(.method(channel: 0, .connectionCloseOk(ConnectionCloseOk())))
      #expect(try await frames.next() == nil)
    }
    try await group.shutdownGracefully()
  }
}

extension Frame {
  /// The method's name ("queue.declare-ok"), or nil for other frames.
  var methodName: String? {
    if case .method(_, let method) = self { return method.name }
    return nil
  }
}
