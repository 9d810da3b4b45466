/// Something a binding leads to: a queue or an exchange. Routers keep these and add them to a ``RouteSet``.
///
/// Two destinations are equal when they are the same object.
public enum Destination: Hashable {
  case queue(Queue)
  case exchange(Exchange)

  /// The queue's or exchange's name.
  public var name: String {
    switch self {
    case .queue(let queue): return queue.name
    case .exchange(let exchange): return exchange.name
    }
  }

  /// The queue, if it is one.
  public var queue: Queue? {
    if case .queue(let queue) = self { return queue }
    return nil
  }

  /// The routing pass that last added this destination to a ``RouteSet``.
  @usableFromInline var routeEpoch: UInt64 {
    get {
      switch self {
      case .queue(let queue): return queue.routeEpoch
      case .exchange(let exchange): return exchange.routeEpoch
      }
    }
    nonmutating set {
      switch self {
      case .queue(let queue): queue.routeEpoch = newValue
      case .exchange(let exchange): exchange.routeEpoch = newValue
      }
    }
  }

  /// The bindings that lead here.
  var incomingBindings: [Binding] {
    get {
      switch self {
      case .queue(let queue): return queue.incomingBindings
      case .exchange(let exchange): return exchange.incomingBindings
      }
    }
    nonmutating set {
      switch self {
      case .queue(let queue): queue.incomingBindings = newValue
      case .exchange(let exchange): exchange.incomingBindings = newValue
      }
    }
  }

  public static func == (lhs: Destination, rhs: Destination) -> Bool {
    switch (lhs, rhs) {
    case (.queue(let a), .queue(let b)): return a === b
    case (.exchange(let a), .exchange(let b)): return a === b
    default: return false
    }
  }

  public func hash(into hasher: inout Hasher) {
    switch self {
    case .queue(let queue): hasher.combine(ObjectIdentifier(queue))
    case .exchange(let exchange): hasher.combine(ObjectIdentifier(exchange))
    }
  }
}
