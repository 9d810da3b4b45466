import AMQPProtocol
import NIOCore
import Testing
import WarrenCore

@testable import WarrenServer

/// A delivery channel for consumers made in these tests (the machine, not the channel, keeps the credit).
final class NullDeliveryChannel: DeliveryChannel {
  func canDeliver(to consumer: Consumer) -> Bool { true }
  func deliver(_ message: QueuedMessage, from queue: Queue, to consumer: Consumer) {}
  func consumerCancelledByServer(_ consumer: Consumer) {}
}

/// A channel machine with a queue and helpers to deliver to it, no sockets.
struct ChannelFixture {
  var machine = ChannelStateMachine(maxMessageSize: 1000)
  let queue: Queue
  let sink = NullDeliveryChannel()

  init() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    self.queue = try vhost.declareQueue(name: "q", connection: 1)
  }

  func consumer(_ tag: String, prefetch: Int = 0, noAck: Bool = false) -> Consumer {
    Consumer(tag: tag, queue: self.queue, noAck: noAck, exclusive: false, prefetchCount: prefetch, channel: self.sink)
  }

  /// Delivers `count` messages to `consumer` (nil: basic.get); returns their tags.
  @discardableResult
  mutating func deliver(_ count: Int, to consumer: Consumer?) -> [UInt64] {
    (0..<count).map { i in
      let message = QueuedMessage(
        message: Message.make(exchange: "", routingKey: "q", body: ByteBuffer(string: "\(i)")), sequence: UInt32(i))
      return self.machine.delivered(message, from: self.queue, to: consumer, noAck: consumer?.noAck ?? false)
    }
  }

  var unackedTags: [UInt64] { self.machine.unacked.map(\.tag) }
}

func settled(_ action: ChannelStateMachine.Action) -> (tags: [UInt64], requeue: Bool, reply: AMQPMethod?)? {
  switch action {
  case .settle(let settlement, let reply): return (settlement.deliveries.map(\.tag), settlement.requeue, reply)
  case .settleOne(let delivery): return ([delivery.tag], false, nil)
  default: return nil
  }
}

func channelError(_ action: ChannelStateMachine.Action) -> BrokerError? {
  if case .channelError(let error, _, _) = action { return error }
  return nil
}

@Suite("Channel semantics: acknowledgements")
struct AcknowledgementTests {
  @Test("ack of the oldest delivery takes the fast path; ack, nack and reject of others settle just them")
  func single() throws {
    var f = try ChannelFixture()
    let consumer = f.consumer("c")
    f.machine.addConsumer(consumer)
    #expect(f.deliver(4, to: consumer) == [1, 2, 3, 4])
    #expect(consumer.unacked == 4)
    guard case .settleOne(let head) = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 1))) else {
      Issue.record("the oldest ack is not the fast path")
      return
    }
    #expect(head.tag == 1)
    let reject = settled(f.machine.methodReceived(.basicReject(BasicReject(deliveryTag: 3, requeue: true))))
    #expect(reject?.tags == [3] && reject?.requeue == true)
    let nack = settled(f.machine.methodReceived(.basicNack(BasicNack(deliveryTag: 4, multiple: false, requeue: false))))
    #expect(nack?.tags == [4] && nack?.requeue == false)
    #expect(f.unackedTags == [2])
    #expect(consumer.unacked == 1)
  }

  @Test("multiple settles every delivery up to the tag; tag 0 with multiple settles all")
  func multiple() throws {
    var f = try ChannelFixture()
    f.deliver(6, to: nil)
    let upTo3 = settled(f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 3, multiple: true))))
    #expect(upTo3?.tags == [1, 2, 3])
    let all = settled(f.machine.methodReceived(.basicNack(BasicNack(deliveryTag: 0, multiple: true, requeue: true))))
    #expect(all?.tags == [4, 5, 6] && all?.requeue == true)
    #expect(f.unackedTags.isEmpty)
  }

  @Test("an unknown or already settled tag is 406 PRECONDITION_FAILED")
  func unknown() throws {
    var f = try ChannelFixture()
    f.deliver(2, to: nil)
    _ = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 2)))
    let again = channelError(f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 2))))
    #expect(again?.replyText == "PRECONDITION_FAILED - unknown delivery tag 2")
    let beyond = channelError(f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 9, multiple: false))))
    #expect(beyond?.replyCode == 406)
    #expect(f.unackedTags == [1])
  }

  @Test("recover requeues every unacked delivery and answers recover-ok; requeue=false is 540")
  func recover() throws {
    var f = try ChannelFixture()
    f.deliver(3, to: nil)
    let recovered = settled(f.machine.methodReceived(.basicRecover(BasicRecover(requeue: true))))
    #expect(recovered?.tags == [1, 2, 3] && recovered?.requeue == true)
    #expect(recovered?.reply == .basicRecoverOk(BasicRecoverOk()))
    let refused = f.machine.methodReceived(.basicRecover(BasicRecover(requeue: false)))
    guard case .connectionError(let error, _, _) = refused else {
      Issue.record("expected 540 NOT_IMPLEMENTED, a connection error")
      return
    }
    #expect(error.replyCode == 540)
  }

  @Test("no-ack deliveries are not tracked and use no credit")
  func noAck() throws {
    var f = try ChannelFixture()
    let consumer = f.consumer("c", prefetch: 1, noAck: true)
    #expect(f.deliver(3, to: consumer) == [1, 2, 3])
    #expect(f.unackedTags.isEmpty && consumer.unacked == 0)
    #expect(f.machine.canDeliver(to: consumer))
  }
}

@Suite("Channel semantics: prefetch and flow")
struct PrefetchTests {
  @Test("per-consumer prefetch applies to consumers created after basic.qos, each on its own")
  func perConsumer() throws {
    var f = try ChannelFixture()
    let answered1 = f.machine.methodReceivedIsReply(.basicQos(BasicQos(prefetchCount: 2)), .basicQosOk(BasicQosOk()))
    #expect(answered1)
    let a = f.consumer("a", prefetch: f.machine.consumerPrefetch)
    let b = f.consumer("b", prefetch: f.machine.consumerPrefetch)
    #expect(a.prefetchCount == 2)
    f.deliver(2, to: a)
    #expect(!f.machine.canDeliver(to: a))
    #expect(f.machine.canDeliver(to: b))
    _ = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 1)))
    #expect(f.machine.canDeliver(to: a))
  }

  @Test("global prefetch limits the whole channel and asks the queues to deliver again when raised")
  func global() throws {
    var f = try ChannelFixture()
    let qos = f.machine.methodReceived(.basicQos(BasicQos(prefetchCount: 3, global: true)))
    guard case .replyAndResume(.basicQosOk) = qos else {
      Issue.record("global qos does not resume deliveries")
      return
    }
    let a = f.consumer("a")
    let b = f.consumer("b")
    f.deliver(2, to: a)
    f.deliver(1, to: b)
    #expect(!f.machine.canDeliver(to: a) && !f.machine.canDeliver(to: b))
    _ = f.machine.methodReceived(.basicQos(BasicQos(prefetchCount: 4, global: true)))
    #expect(f.machine.canDeliver(to: a))
  }

  @Test("prefetch_size is 540 NOT_IMPLEMENTED")
  func prefetchSize() throws {
    var f = try ChannelFixture()
    guard
      case .connectionError(let error, let classID, let methodID) = f.machine.methodReceived(
        .basicQos(BasicQos(prefetchSize: 10)))
    else {
      Issue.record("expected a connection error")
      return
    }
    #expect(error.replyCode == 540 && classID == 60 && methodID == 10)
  }

  @Test("channel.flow off stops deliveries, on resumes them")
  func flow() throws {
    var f = try ChannelFixture()
    let consumer = f.consumer("c")
    let answered2 = f.machine.methodReceivedIsReply(
      .channelFlow(ChannelFlow(active: false)), .channelFlowOk(ChannelFlowOk(active: false)))
    #expect(answered2)
    #expect(!f.machine.canDeliver(to: consumer))
    guard
      case .replyAndResume(.channelFlowOk(let ok)) = f.machine.methodReceived(.channelFlow(ChannelFlow(active: true)))
    else {
      Issue.record("flow on does not resume")
      return
    }
    #expect(ok.active && f.machine.canDeliver(to: consumer))
  }
}

@Suite("Channel semantics: transactions")
struct TransactionTests {
  static let publish = BasicPublish(exchange: "", routingKey: "q")

  mutating func publishOne(_ machine: inout ChannelStateMachine, body: String) {
    _ = machine.methodReceived(.basicPublish(Self.publish))
    _ = machine.headerReceived(ContentHeader(bodySize: UInt64(body.utf8.count), properties: .init()))
    guard case .publishReady = machine.bodyReceived(ByteBuffer(string: body)) else {
      Issue.record("no message")
      return
    }
    machine.addToTransaction(machine.takeContent())
  }

  @Test("commit hands over the publishes, then the acknowledgements made inside the transaction")
  mutating func commit() throws {
    var f = try ChannelFixture()
    let answered3 = f.machine.methodReceivedIsReply(.txSelect(TxSelect()), .txSelectOk(TxSelectOk()))
    #expect(answered3)
    f.deliver(3, to: nil)
    self.publishOne(&f.machine, body: "one")
    self.publishOne(&f.machine, body: "two")
    // Acks in a transaction wait for commit, even the oldest one.
    guard case .none = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 1))) else {
      Issue.record("ack applied before commit")
      return
    }
    _ = f.machine.methodReceived(.basicNack(BasicNack(deliveryTag: 3, multiple: false, requeue: true)))
    #expect(f.unackedTags == [2])
    guard case .commit(let transaction) = f.machine.methodReceived(.txCommit(TxCommit())) else {
      Issue.record("no commit")
      return
    }
    #expect(transaction.publishes.map { String(buffer: $0.body) } == ["one", "two"])
    #expect(transaction.settlements.map { $0.deliveries.map(\.tag) } == [[1], [3]])
    #expect(transaction.settlements.map(\.requeue) == [false, true])
    // The next transaction starts empty.
    guard case .commit(let next) = f.machine.methodReceived(.txCommit(TxCommit())) else {
      Issue.record("no second commit")
      return
    }
    #expect(next.publishes.isEmpty && next.settlements.isEmpty)
  }

  @Test("rollback drops the publishes and makes the acknowledged deliveries unacked again, in tag order")
  mutating func rollback() throws {
    var f = try ChannelFixture()
    let consumer = f.consumer("c")
    _ = f.machine.methodReceived(.txSelect(TxSelect()))
    f.deliver(4, to: consumer)
    self.publishOne(&f.machine, body: "dropped")
    _ = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 2, multiple: true)))
    _ = f.machine.methodReceived(.basicReject(BasicReject(deliveryTag: 4, requeue: false)))
    #expect(f.unackedTags == [3] && consumer.unacked == 1)
    let answered4 = f.machine.methodReceivedIsReply(.txRollback(TxRollback()), .txRollbackOk(TxRollbackOk()))
    #expect(answered4)
    #expect(f.unackedTags == [1, 2, 3, 4] && consumer.unacked == 4)
    guard case .commit(let transaction) = f.machine.methodReceived(.txCommit(TxCommit())) else {
      Issue.record("no commit after rollback")
      return
    }
    #expect(transaction.publishes.isEmpty && transaction.settlements.isEmpty)
  }

  @Test("tx and confirm modes exclude each other; commit outside a transaction is 406")
  func modes() throws {
    var f = try ChannelFixture()
    let action5 = f.machine.methodReceived(.txCommit(TxCommit()))
    #expect(
      channelError(action5)?.replyText
        == "PRECONDITION_FAILED - channel is not transactional")
    _ = f.machine.methodReceived(.confirmSelect(ConfirmSelect()))
    let action6 = f.machine.methodReceived(.txSelect(TxSelect()))
    #expect(
      channelError(action6)?.replyText
        == "PRECONDITION_FAILED - cannot switch from confirm to tx mode")
  }

  @Test("release returns consumers and every unacked delivery, those acked in an open transaction included")
  func release() throws {
    var f = try ChannelFixture()
    let consumer = f.consumer("c")
    f.machine.addConsumer(consumer)
    _ = f.machine.methodReceived(.txSelect(TxSelect()))
    f.deliver(3, to: consumer)
    _ = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: 2)))
    let (consumers, unacked) = f.machine.release()
    #expect(consumers.map(\.tag) == ["c"])
    #expect(unacked.deliveries.map(\.tag) == [1, 2, 3] && unacked.requeue)
    #expect(f.machine.isClosing && f.machine.consumers.isEmpty && consumer.unacked == 0)
  }
}

@Suite("Channel semantics: consumers and closing")
struct ConsumerAndCloseTests {
  @Test("consumer tags: generated when empty, 530 when reused")
  func tags() throws {
    var f = try ChannelFixture()
    let generated = try f.machine.consumerTag(requested: "")
    #expect(generated.hasPrefix("amq.ctag-") && generated.count == 31)
    f.machine.addConsumer(f.consumer("mine"))
    #expect(throws: BrokerError.notAllowed("attempt to reuse consumer tag 'mine'")) {
      try f.machine.consumerTag(requested: "mine")
    }
    #expect(f.machine.removeConsumer(tag: "mine")?.tag == "mine")
    #expect(try f.machine.consumerTag(requested: "mine") == "mine")
  }

  @Test("topology methods go to the executor; unknown ones are 503")
  func passThrough() throws {
    var f = try ChannelFixture()
    guard case .perform(.queueDeclare) = f.machine.methodReceived(.queueDeclare(QueueDeclare(queue: "x"))) else {
      Issue.record("declare not handed over")
      return
    }
    guard case .connectionError(let error, _, _) = f.machine.methodReceived(.connectionOpen(ConnectionOpen())) else {
      Issue.record("expected 503")
      return
    }
    #expect(error.replyCode == 503)
  }

  @Test("client close: release and close-ok; both closing at once is answered too")
  func close() throws {
    var f = try ChannelFixture()
    guard
      case .closeRequested = f.machine.methodReceived(
        .channelClose(ChannelClose(replyCode: 200, replyText: "", classID: 0, methodID: 0)))
    else {
      Issue.record("close not requested")
      return
    }
    #expect(f.machine.state == .closed)
    var g = try ChannelFixture()
    g.machine.serverClosing()
    #expect(!g.machine.canDeliver(to: g.consumer("c")))
    guard
      case .closeRequested = g.machine.methodReceived(
        .channelClose(ChannelClose(replyCode: 200, replyText: "", classID: 0, methodID: 0)))
    else {
      Issue.record("simultaneous close not answered")
      return
    }
  }
}

@Suite("Confirm tracker")
struct ConfirmTrackerTests {
  @Test("immediate acks coalesce into one multiple ack, with no per-publish state")
  func coalesce() {
    var tracker = ConfirmTracker()
    for _ in 0..<5 { tracker.record(.ack) }
    #expect(tracker.nextConfirm() == .init(method: .basicAck(BasicAck(deliveryTag: 5, multiple: true)), count: 5))
    #expect(tracker.nextConfirm() == nil)
    tracker.record(.ack)
    #expect(tracker.nextConfirm() == .init(method: .basicAck(BasicAck(deliveryTag: 6, multiple: false)), count: 1))
  }

  @Test("a publish waiting for storage holds back later confirms until its token completes, then all go in order")
  func delayedToken() {
    var tracker = ConfirmTracker()
    tracker.record(.ack)  // 1
    tracker.record(.waiting(StorageToken(generation: 7)))  // 2
    tracker.record(.ack)  // 3
    tracker.record(.waiting(StorageToken(generation: 8)))  // 4
    #expect(tracker.nextConfirm()?.method == .basicAck(BasicAck(deliveryTag: 1, multiple: false)))
    #expect(tracker.nextConfirm() == nil)  // 2 waits, and 3 behind it
    tracker.storageCompleted(upTo: StorageToken(generation: 6))
    #expect(tracker.nextConfirm() == nil)
    tracker.storageCompleted(upTo: StorageToken(generation: 7))
    #expect(tracker.nextConfirm() == .init(method: .basicAck(BasicAck(deliveryTag: 3, multiple: true)), count: 2))
    #expect(tracker.nextConfirm() == nil)
    tracker.storageCompleted(upTo: StorageToken(generation: 9))
    #expect(tracker.nextConfirm()?.method == .basicAck(BasicAck(deliveryTag: 4, multiple: false)))
    #expect(tracker.unconfirmed == 0)
  }

  @Test("a failed sync nacks the publishes waiting up to its token, in order; later ones still wait")
  func failedToken() {
    var tracker = ConfirmTracker()
    tracker.record(.waiting(StorageToken(generation: 3)))  // 1
    tracker.record(.waiting(StorageToken(generation: 4)))  // 2
    tracker.record(.waiting(StorageToken(generation: 5)))  // 3
    tracker.storageFailed(upTo: StorageToken(generation: 4))
    #expect(
      tracker.nextConfirm()
        == .init(method: .basicNack(BasicNack(deliveryTag: 2, multiple: true, requeue: false)), count: 2))
    #expect(tracker.nextConfirm() == nil)
    tracker.storageCompleted(upTo: StorageToken(generation: 5))
    #expect(tracker.nextConfirm()?.method == .basicAck(BasicAck(deliveryTag: 3, multiple: false)))
  }

  @Test("refused publishes are nacked in order between acks; runs of nacks coalesce")
  func nacks() {
    var tracker = ConfirmTracker()
    tracker.record(.ack)  // 1
    tracker.record(.nack)  // 2
    tracker.record(.nack)  // 3
    tracker.record(.ack)  // 4
    tracker.record(.nack)  // 5
    #expect(tracker.nextConfirm()?.method == .basicAck(BasicAck(deliveryTag: 1, multiple: false)))
    #expect(
      tracker.nextConfirm()
        == .init(method: .basicNack(BasicNack(deliveryTag: 3, multiple: true, requeue: false)), count: 2))
    #expect(tracker.nextConfirm()?.method == .basicAck(BasicAck(deliveryTag: 4, multiple: false)))
    #expect(tracker.nextConfirm()?.method == .basicNack(BasicNack(deliveryTag: 5, multiple: false, requeue: false)))
    #expect(tracker.nextConfirm() == nil)
  }

  @Test("the channel records outcomes only in confirm mode")
  func channelMode() throws {
    var f = try ChannelFixture()
    f.machine.published(.ack)
    #expect(f.machine.nextConfirm() == nil && f.machine.confirms.published == 0)
    let answered7 = f.machine.methodReceivedIsReply(
      .confirmSelect(ConfirmSelect()), .confirmSelectOk(ConfirmSelectOk()))
    #expect(answered7)
    f.machine.published(.waiting(StorageToken(generation: 1)))
    f.machine.published(.ack)
    #expect(f.machine.nextConfirm() == nil)
    f.machine.storageCompleted(upTo: StorageToken(generation: 1))
    #expect(f.machine.nextConfirm()?.method == .basicAck(BasicAck(deliveryTag: 2, multiple: true)))
  }
}

@Suite("Read gate")
struct ReadGateTests {
  @Test("flow control pauses only bulk publishers, and the pause ends")
  func flowControl() {
    var gate = ReadGate()
    gate.throttleRequestedByQueue()
    #expect(gate.readCompleted(publishing: true, bulkPublishes: 10, alarm: false, clientWantsBlocked: true) == .none)  // not bulk
    gate.throttleRequestedByQueue()
    let paused = gate.readCompleted(publishing: true, bulkPublishes: 64, alarm: false, clientWantsBlocked: true)
    #expect(paused == ReadGate.Action(setReading: false, startPauseTimer: true))
    #expect(!gate.isReading)
    #expect(gate.pauseEnded() == ReadGate.Action(setReading: true))
    #expect(gate.pauseEnded() == .none)
  }

  @Test("an alarm blocks a publishing connection once, tells it if asked, and unblocks when cleared")
  func alarm() {
    var gate = ReadGate()
    #expect(gate.readCompleted(publishing: false, bulkPublishes: 0, alarm: true, clientWantsBlocked: true) == .none)  // consumers go on
    let blocked = gate.readCompleted(publishing: true, bulkPublishes: 1, alarm: true, clientWantsBlocked: true)
    #expect(blocked == ReadGate.Action(setReading: false, sendBlocked: true))
    #expect(gate.isBlockedByAlarm)
    #expect(gate.alarmsCleared() == ReadGate.Action(setReading: true, sendUnblocked: true))
    #expect(gate.alarmsCleared() == .none)
  }

  @Test("with both reasons, reading resumes only when both are gone")
  func both() {
    var gate = ReadGate()
    gate.throttleRequestedByQueue()
    let action = gate.readCompleted(publishing: true, bulkPublishes: 100, alarm: true, clientWantsBlocked: false)
    #expect(action == ReadGate.Action(setReading: false, startPauseTimer: true))
    #expect(gate.pauseEnded() == .none)  // the alarm still holds it
    #expect(gate.alarmsCleared() == ReadGate.Action(setReading: true))
  }
}

extension ChannelStateMachine {
  /// Whether a method is answered with exactly this reply.
  mutating func methodReceivedIsReply(_ method: AMQPMethod, _ reply: AMQPMethod) -> Bool {
    if case .reply(let sent) = self.methodReceived(method) { return sent == reply }
    return false
  }
}

@Suite("Channel semantics: consumer timeout")
struct ConsumerTimeoutTests {
  func delivery(_ fixture: inout ChannelFixture, deadline: UInt64, noAck: Bool = false) -> UInt64 {
    let message = QueuedMessage(
      message: Message.make(exchange: "", routingKey: "q", body: ByteBuffer(string: "m")), sequence: 1)
    return fixture.machine.delivered(message, from: fixture.queue, to: nil, noAck: noAck, deadline: deadline)
  }

  @Test("a delivery times out at its deadline, not before; acknowledged ones and no-ack ones never do")
  func deadlines() throws {
    var f = try ChannelFixture()
    _ = self.delivery(&f, deadline: .max, noAck: true)
    let early = self.delivery(&f, deadline: 100)
    let late = self.delivery(&f, deadline: 300)
    #expect(f.machine.timedOutDelivery(now: 99) == nil)
    #expect(f.machine.timedOutDelivery(now: 100)?.tag == early)
    _ = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: early)))
    #expect(f.machine.timedOutDelivery(now: 299) == nil)  // the earliest deadline is found again among the rest
    #expect(f.machine.timedOutDelivery(now: 300)?.tag == late)
    _ = f.machine.methodReceived(.basicAck(BasicAck(deliveryTag: late)))
    #expect(f.machine.timedOutDelivery(now: .max - 1) == nil)
  }
}
