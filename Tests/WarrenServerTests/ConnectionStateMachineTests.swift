import AMQPProtocol
import NIOCore
import Testing
import WarrenCore

@testable import WarrenServer

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
  func makeMachine() -> ConnectionStateMachine {
    ConnectionStateMachine(limits: BrokerLimits(), serverProperties: ["product": .longString("Warren")])
  }

  func plain(_ user: String, _ password: String) -> [UInt8] {
    [0] + Array(user.utf8) + [0] + Array(password.utf8)
  }

  @Test("the handshake: header, start, start-ok, tune, tune-ok, open, open-ok")
  func handshake() {
    var machine = makeMachine()
    guard case .send(.connectionStart(let start)) = machine.protocolHeaderReceived(amqpProtocolHeader) else {
      Issue.record("no connection.start")
      return
    }
    #expect(start.versionMajor == 0 && start.versionMinor == 9)
    #expect(String(decoding: start.mechanisms, as: UTF8.self) == "PLAIN AMQPLAIN")
    let auth = machine.methodReceived(
      .connectionStartOk(ConnectionStartOk(clientProperties: [:], mechanism: "PLAIN", response: plain("guest", "pw"))))
    #expect(auth == .authenticate(mechanism: "PLAIN", username: "guest", password: "pw"))
    #expect(
      machine.authenticated("guest")
        == .send(.connectionTune(ConnectionTune(channelMax: 2047, frameMax: 131_072, heartbeat: 60))))
    #expect(
      machine.methodReceived(.connectionTuneOk(ConnectionTuneOk(channelMax: 100, frameMax: 65536, heartbeat: 10)))
        == .applyTuning(.init(channelMax: 100, frameMax: 65536, heartbeat: 10)))
    #expect(machine.methodReceived(.connectionOpen(ConnectionOpen(virtualHost: "/"))) == .openVirtualHost("/"))
    #expect(!machine.isOpen)
    #expect(machine.virtualHostOpened("/", error: nil) == .send(.connectionOpenOk(ConnectionOpenOk())))
    #expect(machine.isOpen)
    #expect(
      machine.methodReceived(.connectionClose(ConnectionClose(replyCode: 200, classID: 0, methodID: 0)))
        == .sendCloseOkAndClose)
    #expect(machine.state == .closed)
  }

  @Test("EXTERNAL: offered only after a verified certificate, it logs in as the certificate's user, no password")
  func external() {
    var machine = makeMachine()
    machine.certificateVerified(user: "app")
    guard case .send(.connectionStart(let start)) = machine.protocolHeaderReceived(amqpProtocolHeader) else {
      Issue.record("no connection.start")
      return
    }
    #expect(String(decoding: start.mechanisms, as: UTF8.self) == "EXTERNAL PLAIN AMQPLAIN")
    // The response (often the user name, or empty) is not what decides: the certificate is.
    let auth = machine.methodReceived(
      .connectionStartOk(ConnectionStartOk(clientProperties: [:], mechanism: "EXTERNAL", response: Array("x".utf8))))
    #expect(auth == .authenticate(mechanism: "EXTERNAL", username: "app", password: nil))
    #expect(machine.authenticated(nil) == .closeSocket)  // an unknown user, from a client without the capability
  }

  @Test("EXTERNAL without a verified certificate is an unknown mechanism (503); a late certificate changes nothing")
  func externalWithoutCertificate() {
    var machine = makeMachine()
    guard case .send(.connectionStart(let start)) = machine.protocolHeaderReceived(amqpProtocolHeader) else {
      Issue.record("no connection.start")
      return
    }
    #expect(String(decoding: start.mechanisms, as: UTF8.self) == "PLAIN AMQPLAIN")
    machine.certificateVerified(user: "app")  // after the header: ignored
    #expect(machine.certificateUser == nil)
    let method = AMQPMethod.connectionStartOk(
      ConnectionStartOk(clientProperties: [:], mechanism: "EXTERNAL", response: []))
    #expect(
      machine.methodReceived(method)
        == .sendClose(.commandInvalid("unknown authentication mechanism 'EXTERNAL'"), classID: 10, methodID: 11))
  }

  @Test("tune-ok with zeros takes the server's limits")
  func tuneZeros() {
    var machine = makeMachine()
    _ = machine.protocolHeaderReceived(amqpProtocolHeader)
    _ = machine.methodReceived(.connectionStartOk(ConnectionStartOk(clientProperties: [:], response: plain("g", "g"))))
    _ = machine.authenticated("g")
    #expect(
      machine.methodReceived(.connectionTuneOk(ConnectionTuneOk(channelMax: 0, frameMax: 0, heartbeat: 0)))
        == .applyTuning(.init(channelMax: 2047, frameMax: 131_072, heartbeat: 0)))
  }

  @Test("a frame_max below 4096 or above the offer is 530 NOT_ALLOWED")
  func badFrameMax() {
    for frameMax: UInt32 in [1000, 1_000_000] {
      var machine = makeMachine()
      _ = machine.protocolHeaderReceived(amqpProtocolHeader)
      _ = machine.methodReceived(
        .connectionStartOk(ConnectionStartOk(clientProperties: [:], response: plain("g", "g"))))
      _ = machine.authenticated("g")
      guard
        case .sendClose(let error, 10, 31) = machine.methodReceived(
          .connectionTuneOk(ConnectionTuneOk(channelMax: 0, frameMax: frameMax, heartbeat: 0)))
      else {
        Issue.record("no close for frame_max \(frameMax)")
        continue
      }
      #expect(error.replyCode == 530)
      #expect(machine.state == .closing)
    }
  }

  @Test("a wrong protocol header is answered with ours")
  func wrongHeader() {
    var machine = makeMachine()
    #expect(machine.protocolHeaderReceived(Array("HTTP/1.1".utf8)) == .sendProtocolHeaderAndClose)
    #expect(machine.state == .closed)
  }

  @Test("a refused login closes with 403 only for clients with authentication_failure_close")
  func refusedLogin() {
    var plainClient = makeMachine()
    _ = plainClient.protocolHeaderReceived(amqpProtocolHeader)
    _ = plainClient.methodReceived(
      .connectionStartOk(ConnectionStartOk(clientProperties: [:], response: plain("guest", "bad"))))
    #expect(plainClient.authenticated(nil) == .closeSocket)

    var modernClient = makeMachine()
    _ = modernClient.protocolHeaderReceived(amqpProtocolHeader)
    _ = modernClient.methodReceived(
      .connectionStartOk(
        ConnectionStartOk(
          clientProperties: ["capabilities": .table(["authentication_failure_close": .bool(true)])],
          response: plain("guest", "bad"))))
    guard case .sendClose(let error, 10, 11) = modernClient.authenticated(nil) else {
      Issue.record("no connection.close for the refused login")
      return
    }
    // The socket stays open for the client's close-ok, as RabbitMQ does.
    #expect(modernClient.state == .closing)
    #expect(modernClient.methodReceived(.connectionCloseOk(ConnectionCloseOk())) == .closeSocket)
    #expect(error.replyCode == 403)
    #expect(error.replyText.hasPrefix("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"))
  }

  @Test("PLAIN and AMQPLAIN responses are parsed")
  func credentials() {
    #expect(ConnectionStateMachine.parseCredentials(mechanism: "PLAIN", response: plain("u", "p:w"))! == ("u", "p:w"))
    #expect(ConnectionStateMachine.parseCredentials(mechanism: "PLAIN", response: Array("nonull".utf8)) == nil)
    var table = ByteBuffer()
    table.writeAMQPFieldTable(["LOGIN": .longString("alice"), "PASSWORD": .longString("secret")])
    table.moveReaderIndex(forwardBy: 4)
    let response = Array(table.readableBytesView)
    #expect(
      ConnectionStateMachine.parseCredentials(mechanism: "AMQPLAIN", response: response)! == ("alice", "secret"))
  }

  @Test("an unknown vhost is 530 and the connection closes")
  func unknownVhost() {
    var machine = makeMachine()
    _ = machine.protocolHeaderReceived(amqpProtocolHeader)
    _ = machine.methodReceived(.connectionStartOk(ConnectionStartOk(clientProperties: [:], response: plain("g", "g"))))
    _ = machine.authenticated("g")
    _ = machine.methodReceived(.connectionTuneOk(ConnectionTuneOk(channelMax: 0, frameMax: 0, heartbeat: 0)))
    _ = machine.methodReceived(.connectionOpen(ConnectionOpen(virtualHost: "nope")))
    let action = machine.virtualHostOpened("nope", error: .notAllowed("vhost nope not found"))
    guard case .sendClose(let error, 10, 40) = action else {
      Issue.record("expected close")
      return
    }
    #expect(error.replyText == "NOT_ALLOWED - vhost nope not found")
  }

  @Test("methods out of order during the handshake close the connection")
  func outOfOrder() {
    var machine = makeMachine()
    _ = machine.protocolHeaderReceived(amqpProtocolHeader)
    guard case .sendClose(let error, 10, 40) = machine.methodReceived(.connectionOpen(ConnectionOpen())) else {
      Issue.record("expected close")
      return
    }
    #expect(error.replyCode == 504)
  }

  @Test("while closing, only close and close-ok count")
  func closing() {
    var machine = makeMachine()
    _ = machine.protocolHeaderReceived(amqpProtocolHeader)
    _ = machine.methodReceived(.connectionStartOk(ConnectionStartOk(clientProperties: [:], response: plain("g", "g"))))
    _ = machine.authenticated("g")
    _ = machine.methodReceived(.connectionTuneOk(ConnectionTuneOk(channelMax: 0, frameMax: 0, heartbeat: 0)))
    _ = machine.methodReceived(.connectionOpen(ConnectionOpen()))
    _ = machine.virtualHostOpened("/", error: nil)
    guard case .sendClose(let error, 0, 0) = machine.shutdown(reason: "bye") else {
      Issue.record("expected close")
      return
    }
    #expect(error.replyCode == 320)
    #expect(machine.methodReceived(.connectionUpdateSecret(ConnectionUpdateSecret(newSecret: [], reason: ""))) == .none)
    #expect(machine.methodReceived(.connectionCloseOk(ConnectionCloseOk())) == .closeSocket)
  }
}

@Suite("Channel state machine")
struct ChannelStateMachineTests {
  let publish = BasicPublish(exchange: "x", routingKey: "k")

  @Test("publish, header and one body frame make a message without copying")
  func singleFrame() {
    var machine = ChannelStateMachine(maxMessageSize: 1000)
    guard case .none = machine.methodReceived(.basicPublish(publish)) else {
      Issue.record("expected none")
      return
    }
    guard case .none = machine.headerReceived(ContentHeader(bodySize: 5, properties: .init())) else {
      Issue.record("expected none")
      return
    }
    guard case .publishReady = machine.bodyReceived(ByteBuffer(string: "hello")) else {
      Issue.record("expected publish")
      return
    }
    let content = machine.takeContent()
    #expect(content.publish == publish && content.body == ByteBuffer(string: "hello"))
    guard case .reply(.basicQosOk) = machine.methodReceived(.basicQos(BasicQos())) else {
      Issue.record("channel not open again")
      return
    }
  }

  @Test("body frames are assembled, an empty body needs none")
  func assembly() {
    var machine = ChannelStateMachine(maxMessageSize: 1000)
    _ = machine.methodReceived(.basicPublish(publish))
    _ = machine.headerReceived(ContentHeader(bodySize: 6, properties: .init()))
    guard case .none = machine.bodyReceived(ByteBuffer(string: "ab")) else {
      Issue.record("too early")
      return
    }
    guard case .none = machine.bodyReceived(ByteBuffer(string: "cd")) else {
      Issue.record("too early")
      return
    }
    guard case .publishReady = machine.bodyReceived(ByteBuffer(string: "ef")) else {
      Issue.record("expected publish")
      return
    }
    #expect(machine.takeContent().body == ByteBuffer(string: "abcdef"))
    _ = machine.methodReceived(.basicPublish(publish))
    guard case .publishReady = machine.headerReceived(ContentHeader(bodySize: 0, properties: .init())) else {
      Issue.record("expected publish")
      return
    }
    #expect(machine.takeContent().body.readableBytes == 0)
  }

  @Test("content out of place is 505 UNEXPECTED_FRAME")
  func unexpected() {
    var machine = ChannelStateMachine(maxMessageSize: 1000)
    guard case .connectionError(let e1, _, _) = machine.bodyReceived(ByteBuffer(string: "x")) else {
      Issue.record("body without publish accepted")
      return
    }
    #expect(e1.replyCode == 505)
    guard case .connectionError(let e2, _, _) = machine.headerReceived(ContentHeader(bodySize: 1, properties: .init()))
    else {
      Issue.record("header without publish accepted")
      return
    }
    #expect(e2.replyCode == 505)
    _ = machine.methodReceived(.basicPublish(publish))
    guard case .connectionError(let e3, _, _) = machine.methodReceived(.basicQos(BasicQos())) else {
      Issue.record("method instead of header accepted")
      return
    }
    #expect(e3.replyCode == 505)
    var overflow = ChannelStateMachine(maxMessageSize: 1000)
    _ = overflow.methodReceived(.basicPublish(publish))
    _ = overflow.headerReceived(ContentHeader(bodySize: 2, properties: .init()))
    guard case .connectionError(let e4, _, _) = overflow.bodyReceived(ByteBuffer(string: "xyz")) else {
      Issue.record("longer body accepted")
      return
    }
    #expect(e4.replyCode == 505)
  }

  @Test("a message over the maximum size is a 406 channel error")
  func tooLarge() {
    var machine = ChannelStateMachine(maxMessageSize: 10)
    _ = machine.methodReceived(.basicPublish(publish))
    guard
      case .channelError(let error, 60, 40) = machine.headerReceived(ContentHeader(bodySize: 11, properties: .init()))
    else {
      Issue.record("expected a channel error")
      return
    }
    #expect(error.replyText == "PRECONDITION_FAILED - message size 11 is larger than configured max size 10")
  }

  @Test("after the server closes the channel, frames are dropped until close-ok")
  func closing() {
    var machine = ChannelStateMachine(maxMessageSize: 10)
    machine.serverClosing()
    guard case .none = machine.methodReceived(.basicQos(BasicQos())) else {
      Issue.record("not dropped")
      return
    }
    guard case .none = machine.bodyReceived(ByteBuffer(string: "x")) else {
      Issue.record("not dropped")
      return
    }
    guard case .closed = machine.methodReceived(.channelCloseOk(ChannelCloseOk())) else {
      Issue.record("close-ok not seen")
      return
    }
  }
}
