import NIOCore
import WarrenCore
import WarrenMetrics
import WarrenServer

extension AMQPServer {
  /// Copies the broker's figures for a scrape, in one hop to its event loop: the counters, the gauges and the
  /// totals always, a sample per queue, exchange and connection when `perObject`.
  public func metricsSnapshot(perObject: Bool) async throws -> MetricsSnapshot {
    try await self.inspect { MetricsSnapshot(of: $0, perObject: perObject) }
  }
}

extension MetricsSnapshot {
  /// The figures of an inspected broker.
  public init(of inspection: BrokerInspection, perObject: Bool) {
    var snapshot = MetricsSnapshot()
    snapshot.counters = inspection.broker.counters.values
    snapshot.alarms = inspection.alarms
    let broker = inspection.broker
    for vhost in broker.vhosts.values.sorted(by: { $0.name < $1.name }) {
      if let value = vhost.limits.maxConnections {
        snapshot.limits.append(("vhost", vhost.name, "max-connections", value, vhost.connectionCount))
      }
      if let value = vhost.limits.maxQueues {
        snapshot.limits.append(("vhost", vhost.name, "max-queues", value, vhost.queues.count))
      }
    }
    for (user, limits) in broker.userLimits.sorted(by: { $0.key < $1.key }) {
      if let value = limits.maxConnections {
        snapshot.limits.append(("user", user, "max-connections", value, broker.userConnections[user] ?? 0))
      }
      if let value = limits.maxChannels {
        snapshot.limits.append(("user", user, "max-channels", value, broker.userChannels[user] ?? 0))
      }
    }
    if let value = broker.connectionMax {
      snapshot.limits.append(("node", "", "connection_max", value, broker.openConnectionCount))
    }
    snapshot.connectionCount = inspection.connectionCount
    inspection.forEachConnection { connection in
      snapshot.channelCount += connection.channels
      snapshot.connectionBytesReceived += connection.bytesReceived
      snapshot.connectionBytesSent += connection.bytesSent
      if perObject { snapshot.connections.append(connection) }
    }
    for vhost in inspection.broker.vhosts.values {
      snapshot.queueCount += vhost.queues.count
      for queue in vhost.queues.values {
        var sample = QueueSample(vhost: vhost.name, name: queue.name)
        sample.ready = queue.messageCount
        sample.unacked = queue.unackedCount
        sample.readyBytes = queue.storage.bytes
        sample.unackedBytes = queue.unackedBytes
        sample.consumers = queue.consumers.count
        sample.published = queue.messagesPublished
        snapshot.consumerCount += sample.consumers
        snapshot.queueTotals.add(sample)
        if perObject { snapshot.queues.append(sample) }
      }
      if perObject {
        for exchange in vhost.exchanges.values {
          snapshot.exchanges.append(
            ExchangeSample(
              vhost: vhost.name, name: exchange.name, type: exchange.type.name, published: exchange.messagesPublished))
        }
      }
    }
    self = snapshot
  }
}
