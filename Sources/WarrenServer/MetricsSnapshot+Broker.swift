import NIOCore
import WarrenCore
import WarrenMetrics

extension AMQPServer {
  /// Copies the broker's figures for a scrape, in one hop to its event loop: the counters, the gauges and the
  /// totals always, a sample per queue, exchange and connection when `perObject`.
  public func metricsSnapshot(perObject: Bool) async throws -> MetricsSnapshot {
    let runtime = self.runtime
    return try await self.eventLoop.submit { runtime.value.metricsSnapshot(perObject: perObject) }.get()
  }
}

extension BrokerRuntime {
  func metricsSnapshot(perObject: Bool) -> MetricsSnapshot {
    var snapshot = MetricsSnapshot()
    snapshot.counters = self.broker.counters.values
    snapshot.alarms = self.alarms
    snapshot.connectionCount = self.connections.count
    for connection in self.connections.values {
      snapshot.channelCount += connection.channels.count
      snapshot.connectionBytesReceived += connection.bytesReceived
      snapshot.connectionBytesSent += connection.bytesSent
      if perObject {
        snapshot.connections.append(
          ConnectionSample(
            vhost: connection.vhost?.name ?? "", name: connection.name, user: connection.machine.username ?? "",
            channels: connection.channels.count, bytesReceived: connection.bytesReceived,
            bytesSent: connection.bytesSent))
      }
    }
    for vhost in self.broker.vhosts.values {
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
    return snapshot
  }
}
