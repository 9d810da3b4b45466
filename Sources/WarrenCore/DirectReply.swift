/// Where a direct reply-to reply goes: the channel that consumes from `amq.rabbitmq.reply-to`.
public protocol DirectReplyTarget: AnyObject {
  /// Delivers a reply (no-ack) to the channel's reply consumer.
  func deliverDirectReply(_ message: Message)
}

/// A weak reference to a reply target: a closed channel is forgotten even before it unregisters.
struct WeakReplyTarget {
  weak var target: (any DirectReplyTarget)?
}

extension VirtualHost {
  /// The pseudo-queue of RabbitMQ's direct reply-to: consume from it with no-ack, publish a request with it as
  /// `reply_to`, and the reply comes back to the consuming channel without a queue.
  public static let directReplyQueue = "amq.rabbitmq.reply-to"

  /// Gives a channel a reply-to name of its own (`amq.rabbitmq.reply-to.<unique>`), valid until it unregisters.
  public func registerDirectReply(_ target: any DirectReplyTarget) -> String {
    while true {
      let name = Self.directReplyQueue + "." + generatedNameSuffix() + generatedNameSuffix()
      if self.directReplyTargets[name] == nil {
        self.directReplyTargets[name] = WeakReplyTarget(target: target)
        return name
      }
    }
  }

  /// The channel stopped consuming replies (cancelled, closed).
  public func unregisterDirectReply(_ name: String) {
    self.directReplyTargets[name] = nil
  }

  /// A publish to the default exchange with a reply-to name as routing key goes straight to its channel; false
  /// when no channel has that name (the reply is unroutable, as in RabbitMQ).
  func deliverDirectReply(_ message: Message, routingKey: String) -> Bool {
    guard let target = self.directReplyTargets[routingKey]?.target else {
      self.directReplyTargets[routingKey] = nil
      return false
    }
    target.deliverDirectReply(message)
    return true
  }
}
