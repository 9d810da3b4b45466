/// Hears of the exchanges, queues and bindings a virtual host creates and deletes, after the change (the message
/// store records the durable ones, so that they are recovered after a restart).
public protocol TopologyObserver: AnyObject {
  func exchangeDeclared(_ exchange: Exchange, in vhost: VirtualHost)
  func exchangeDeleted(_ exchange: Exchange, in vhost: VirtualHost)
  func queueDeclared(_ queue: Queue, in vhost: VirtualHost)
  func queueDeleted(_ queue: Queue, in vhost: VirtualHost)
  func bindingAdded(_ binding: Binding, in vhost: VirtualHost)
  func bindingRemoved(_ binding: Binding, in vhost: VirtualHost)
}
