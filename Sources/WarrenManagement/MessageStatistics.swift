import Foundation
import WarrenCore
import WarrenServer

/// Rates of one queue (per second, from the last two samples).
struct QueueRates: Sendable {
  var publish = 0.0
  var messages = 0.0
  var ready = 0.0
  var unacked = 0.0
}

/// Message rates for the API and the UI's charts: the broker's counters and each queue's figures sampled every
/// `interval` (RabbitMQ's `collect_statistics_interval` is 5 s), in one hop to the broker's loop per sample; rates
/// are the difference of the last two samples. Keeps the last `retained` overview samples (10 minutes by default)
/// for `/api/overview?history=true`.
public actor MessageStatistics {
  /// Broker-wide rates, per second.
  public struct Rates: Sendable {
    public var publish = 0.0
    public var confirm = 0.0
    public var returnUnroutable = 0.0
    public var dropUnroutable = 0.0
    public var deliverGet = 0.0
    public var deliverManualAck = 0.0
    public var deliverAutoAck = 0.0
    public var getManualAck = 0.0
    public var getAutoAck = 0.0
    public var getEmpty = 0.0
    public var ack = 0.0
    public var redeliver = 0.0
    public var messages = 0.0
    public var ready = 0.0
    public var unacked = 0.0
  }

  struct Sample: Sendable {
    var time: Double
    var counters: BrokerCounters.Values
    var ready: Int
    var unacked: Int
    var queues: [QueueKey: (published: Int, ready: Int, unacked: Int)]
    var exchanges: [QueueKey: Int]
  }

  private let retained: Int
  private var overview: [(time: Double, ready: Int, unacked: Int, rates: Rates)] = []
  private var last: Sample?
  private var currentRates = Rates()
  private var currentQueueRates: [QueueKey: QueueRates] = [:]
  private var currentExchangeRates: [QueueKey: Double] = [:]

  public init(retained: Int = 120) {
    self.retained = retained
  }

  /// Takes a sample now.
  public func sample(_ amqp: AMQPServer) async {
    guard
      let sample = try? await amqp.withBroker({ broker -> Sample in
        var queues: [QueueKey: (Int, Int, Int)] = [:]
        var exchanges: [QueueKey: Int] = [:]
        var ready = 0
        var unacked = 0
        for vhost in broker.vhosts.values {
          for queue in vhost.queues.values where !queue.isHolding {
            queues[QueueKey(vhost: vhost.name, name: queue.name)] = (
              queue.messagesPublished, queue.messageCount, queue.unackedCount
            )
            ready += queue.messageCount
            unacked += queue.unackedCount
          }
          for exchange in vhost.exchanges.values where exchange.messagesPublished > 0 {
            exchanges[QueueKey(vhost: vhost.name, name: exchange.name)] = exchange.messagesPublished
          }
        }
        return Sample(
          time: Date().timeIntervalSince1970, counters: broker.counters.values, ready: ready, unacked: unacked,
          queues: queues, exchanges: exchanges)
      })
    else { return }
    self.add(sample)
  }

  func add(_ sample: Sample) {
    if let last = self.last, sample.time > last.time {
      let seconds = sample.time - last.time
      func rate(_ now: Int, _ before: Int) -> Double { max(0, Double(now - before) / seconds) }
      func change(_ now: Int, _ before: Int) -> Double { Double(now - before) / seconds }
      let c = sample.counters
      let p = last.counters
      var rates = Rates()
      rates.publish = rate(c.messagesReceived, p.messagesReceived)
      rates.confirm = rate(c.messagesConfirmed, p.messagesConfirmed)
      rates.returnUnroutable = rate(c.messagesUnroutableReturned, p.messagesUnroutableReturned)
      rates.dropUnroutable = rate(c.messagesUnroutableDropped, p.messagesUnroutableDropped)
      rates.deliverGet = rate(c.messagesDelivered, p.messagesDelivered)
      rates.deliverManualAck = rate(c.messagesDeliveredConsumeManualAck, p.messagesDeliveredConsumeManualAck)
      rates.deliverAutoAck = rate(c.messagesDeliveredConsumeAutoAck, p.messagesDeliveredConsumeAutoAck)
      rates.getManualAck = rate(c.messagesDeliveredGetManualAck, p.messagesDeliveredGetManualAck)
      rates.getAutoAck = rate(c.messagesDeliveredGetAutoAck, p.messagesDeliveredGetAutoAck)
      rates.getEmpty = rate(c.messagesGetEmpty, p.messagesGetEmpty)
      rates.ack = rate(c.messagesAcknowledged, p.messagesAcknowledged)
      rates.redeliver = rate(c.messagesRedelivered, p.messagesRedelivered)
      rates.ready = change(sample.ready, last.ready)
      rates.unacked = change(sample.unacked, last.unacked)
      rates.messages = rates.ready + rates.unacked
      self.currentRates = rates
      var queueRates: [QueueKey: QueueRates] = [:]
      for (key, now) in sample.queues {
        guard let before = last.queues[key] else { continue }
        queueRates[key] = QueueRates(
          publish: rate(now.published, before.published),
          messages: change(now.ready + now.unacked, before.ready + before.unacked),
          ready: change(now.ready, before.ready), unacked: change(now.unacked, before.unacked))
      }
      self.currentQueueRates = queueRates
      var exchangeRates: [QueueKey: Double] = [:]
      for (key, now) in sample.exchanges { exchangeRates[key] = rate(now, last.exchanges[key] ?? now) }
      self.currentExchangeRates = exchangeRates
    }
    self.overview.append((sample.time, sample.ready, sample.unacked, self.currentRates))
    if self.overview.count > self.retained { self.overview.removeFirst(self.overview.count - self.retained) }
    self.last = sample
  }

  /// The broker-wide rates.
  public func rates() -> Rates { self.currentRates }
  func queueRates() -> [QueueKey: QueueRates] { self.currentQueueRates }
  func exchangeRates() -> [QueueKey: Double] { self.currentExchangeRates }

  /// The retained samples: time, message rates and queued messages, oldest first (the UI's charts).
  func historyJSON() -> JSONValue {
    .array(
      self.overview.map { entry in
        .object([
          ("time", .double(entry.time)), ("publish", .double(entry.rates.publish)),
          ("deliver_get", .double(entry.rates.deliverGet)), ("ack", .double(entry.rates.ack)),
          ("confirm", .double(entry.rates.confirm)), ("ready", .int(entry.ready)), ("unacked", .int(entry.unacked)),
        ])
      })
  }
}
