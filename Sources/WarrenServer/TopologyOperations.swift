import AMQPProtocol
import WarrenCore

/// The methods of a channel that change or read the topology of its virtual host (exchange.*, queue.*), carried out
/// with the connection's user's permissions, as RabbitMQ checks them (403 ACCESS_REFUSED).
struct TopologyOperations {
  let broker: Broker
  let vhost: VirtualHost
  /// The user of the connection.
  let user: String
  /// The connection (exclusive queues belong to it).
  let connection: UInt64

  /// Throws 403 unless the user has this access to the resource.
  func authorize(_ access: Permission.Access, _ kind: String, _ name: String) throws(BrokerError) {
    try self.broker.authorize(access, kind, name, vhost: self.vhost.name, user: self.user)
  }

  /// Carries out a topology method; returns the reply to send (nil for no-wait).
  func perform(_ method: AMQPMethod) throws(BrokerError) -> AMQPMethod? {
    switch method {
    case .exchangeDeclare(let m):
      if !m.passive { try self.authorize(.configure, "exchange", m.exchange) }
      try self.vhost.declareExchange(
        name: m.exchange, type: m.type, passive: m.passive, durable: m.durable, autoDelete: m.autoDelete,
        isInternal: m.isInternal, arguments: m.arguments)
      return m.noWait ? nil : .exchangeDeclareOk(ExchangeDeclareOk())
    case .exchangeDelete(let m):
      try self.authorize(.configure, "exchange", m.exchange)
      try self.vhost.deleteExchange(name: m.exchange, ifUnused: m.ifUnused)
      return m.noWait ? nil : .exchangeDeleteOk(ExchangeDeleteOk())
    case .exchangeBind(let m):
      try self.authorize(.write, "exchange", m.destination)
      try self.authorize(.read, "exchange", m.source)
      try self.vhost.bindExchange(
        destination: m.destination, source: m.source, routingKey: m.routingKey, arguments: m.arguments)
      return m.noWait ? nil : .exchangeBindOk(ExchangeBindOk())
    case .exchangeUnbind(let m):
      try self.authorize(.write, "exchange", m.destination)
      try self.authorize(.read, "exchange", m.source)
      try self.vhost.unbindExchange(
        destination: m.destination, source: m.source, routingKey: m.routingKey, arguments: m.arguments)
      return m.noWait ? nil : .exchangeUnbindOk(ExchangeUnbindOk())
    case .queueDeclare(let m) where m.passive && m.queue == VirtualHost.directReplyQueue:
      // As RabbitMQ: the direct reply-to pseudo-queue exists for a passive declare, empty, one consumer.
      return m.noWait ? nil : .queueDeclareOk(QueueDeclareOk(queue: m.queue, messageCount: 0, consumerCount: 1))
    case .queueDeclare(let m):
      if !m.passive { try self.authorize(.configure, "queue", m.queue.isEmpty ? "amq.gen-" : m.queue) }
      let queue = try self.vhost.declareQueue(
        name: m.queue, passive: m.passive, durable: m.durable, exclusive: m.exclusive, autoDelete: m.autoDelete,
        arguments: m.arguments, connection: self.connection)
      return m.noWait
        ? nil
        : .queueDeclareOk(
          QueueDeclareOk(
            queue: queue.name, messageCount: UInt32(clamping: queue.messageCount),
            consumerCount: UInt32(clamping: queue.consumers.count)))
    case .queueBind(let m):
      try self.authorize(.write, "queue", m.queue)
      try self.authorize(.read, "exchange", m.exchange)
      try self.vhost.bindQueue(
        m.queue, to: m.exchange, routingKey: m.routingKey, arguments: m.arguments, connection: self.connection)
      return m.noWait ? nil : .queueBindOk(QueueBindOk())
    case .queueUnbind(let m):
      try self.authorize(.write, "queue", m.queue)
      try self.authorize(.read, "exchange", m.exchange)
      try self.vhost.unbindQueue(
        m.queue, from: m.exchange, routingKey: m.routingKey, arguments: m.arguments, connection: self.connection)
      return .queueUnbindOk(QueueUnbindOk())
    case .queuePurge(let m):
      try self.authorize(.read, "queue", m.queue)
      let count = try self.vhost.queue(named: m.queue, connection: self.connection).purge()
      return m.noWait ? nil : .queuePurgeOk(QueuePurgeOk(messageCount: UInt32(clamping: count)))
    case .queueDelete(let m):
      try self.authorize(.configure, "queue", m.queue)
      let count = try self.vhost.deleteQueue(
        name: m.queue, ifUnused: m.ifUnused, ifEmpty: m.ifEmpty, connection: self.connection)
      return m.noWait ? nil : .queueDeleteOk(QueueDeleteOk(messageCount: UInt32(clamping: count)))
    default:
      throw .commandInvalid("unexpected method from client: \(method.name)")
    }
  }
}
