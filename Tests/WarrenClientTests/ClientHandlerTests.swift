import AMQPProtocol
import NIOCore
import NIOEmbedded
import Testing

@testable import WarrenClient

/// The client's protocol logic on an EmbeddedChannel: broker frames in, client frames out, no sockets.
struct EmbeddedClient {
  let channel = EmbeddedChannel()
  let opened: EventLoopPromise<Void>
  let handler: ClientHandler
  var decoder = AMQPFrameDecoder(maxFrameSize: 0, expectsProtocolHeader: true)
  var written = ByteBuffer()

  init() throws {
    self.opened = self.channel.embeddedEventLoop.makePromise()
    self.handler = ClientHandler(
      username: "user", password: "secret", virtualHost: "/vh", heartbeat: 30, connectionName: "test",
      opened: self.opened)
    try self.channel.pipeline.syncOperations.addHandler(self.handler)
    try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
  }

  func receive(_ frames: Frame...) throws {
    var buffer = ByteBuffer()
    for frame in frames { buffer.writeAMQPFrame(frame) }
    try self.channel.writeInbound(buffer)
  }

  mutating func sent() throws -> [Frame] {
    while var out = try self.channel.readOutbound(as: ByteBuffer.self) { self.written.writeBuffer(&out) }
    var frames: [Frame] = []
    while let frame = try self.decoder.decodeFrame(&self.written) { frames.append(frame) }
    return frames
  }

  mutating func open() throws {
    try self.receive(
      .method(channel: 0, .connectionStart(ConnectionStart(serverProperties: [:]))),
      .method(channel: 0, .connectionTune(ConnectionTune(channelMax: 100, frameMax: 65536, heartbeat: 60))),
      .method(channel: 0, .connectionOpenOk(ConnectionOpenOk())))
    let names = try self.sent().compactMap { frame -> String? in
      if case .method(_, let method) = frame { return method.name }
      return nil
    }
    #expect(names == ["connection.start-ok", "connection.tune-ok", "connection.open"])
  }
}

@Suite("Client protocol logic")
struct ClientHandlerTests {
  @Test("the handshake: header, start-ok with PLAIN, tune-ok with the smaller heartbeat, open")
  func handshake() throws {
    var client = try EmbeddedClient()
    #expect(try client.sent() == [.protocolHeader(amqpProtocolHeader)])
    try client.receive(.method(channel: 0, .connectionStart(ConnectionStart(serverProperties: [:]))))
    guard case .method(0, .connectionStartOk(let startOk)) = try client.sent().first else {
      Issue.record("no start-ok")
      return
    }
    #expect(startOk.mechanism == "PLAIN" && startOk.response == [0] + Array("user".utf8) + [0] + Array("secret".utf8))
    #expect(startOk.clientProperties["connection_name"] == .longString("test"))
    try client.receive(
      .method(channel: 0, .connectionTune(ConnectionTune(channelMax: 100, frameMax: 65536, heartbeat: 60))))
    #expect(
      try client.sent() == [
        .method(channel: 0, .connectionTuneOk(ConnectionTuneOk(channelMax: 100, frameMax: 65536, heartbeat: 30))),
        .method(channel: 0, .connectionOpen(ConnectionOpen(virtualHost: "/vh"))),
      ])
    let opened = Box(false)
    client.opened.futureResult.whenSuccess { opened.value = true }
    try client.receive(.method(channel: 0, .connectionOpenOk(ConnectionOpenOk())))
    #expect(opened.value)
  }

  @Test("confirms: an ack with multiple settles every earlier publish; a return fails its publish")
  func confirms() throws {
    var client = try EmbeddedClient()
    try client.open()
    let state = ClientChannelState()
    state.confirmMode = true
    client.handler.channels[1] = state
    let results = Box([String]())
    for key in ["a", "b", "c"] {
      let promise = client.channel.embeddedEventLoop.makePromise(of: Void.self)
      let (tag, _) = try #require(
        try client.handler.publish(
          channel: 1, exchange: "", routingKey: key, body: ByteBuffer(string: key), properties: .init(),
          mandatory: true))
      state.pendingConfirms.append(PendingConfirm(tag: tag, promise: promise, exchange: "", routingKey: key))
      promise.futureResult.whenComplete { result in
        switch result {
        case .success: results.value.append("\(key) ok")
        case .failure(let error): results.value.append("\(key) \(error)")
        }
      }
    }
    try client.receive(
      .method(
        channel: 1, .basicReturn(BasicReturn(replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: "b"))),
      .header(channel: 1, ContentHeader(bodySize: 1, properties: .init())),
      .body(channel: 1, ByteBuffer(string: "b")),
      .method(channel: 1, .basicAck(BasicAck(deliveryTag: 3, multiple: true))))
    #expect(results.value == ["a ok", "b message returned: 312 NO_ROUTE", "c ok"])
  }

  @Test("a channel.close from the broker fails what waits on the channel and is answered")
  func channelClose() throws {
    var client = try EmbeddedClient()
    try client.open()
    client.handler.channels[1] = ClientChannelState()
    let promise = client.channel.embeddedEventLoop.makePromise(of: AMQPMethod.self)
    client.handler.call(.queueDeclare(QueueDeclare(queue: "q", passive: true)), channel: 1, promise: promise)
    let failure = Box<(any Error)?>(nil)
    promise.futureResult.whenFailure { failure.value = $0 }
    #expect(try client.sent() == [.method(channel: 1, .queueDeclare(QueueDeclare(queue: "q", passive: true)))])
    try client.receive(
      .method(
        channel: 1,
        .channelClose(ChannelClose(replyCode: 404, replyText: "NOT_FOUND - no queue 'q'", classID: 50, methodID: 10))))
    #expect(failure.value as? AMQPClientError == .channelClosed(replyCode: 404, replyText: "NOT_FOUND - no queue 'q'"))
    #expect(try client.sent() == [.method(channel: 1, .channelCloseOk(ChannelCloseOk()))])
  }
}

/// A value the EmbeddedChannel's callbacks set (they run on the test's thread).
final class Box<T>: @unchecked Sendable {
  var value: T
  init(_ value: T) { self.value = value }
}
