import AMQPProtocol
import WarrenCore

/// `x-round-robin`: each message goes to one bound destination, the next one in turn.
public struct RoundRobinExchangeType: ExchangeType {
  public init() {}

  public var name: String { "x-round-robin" }
  public var description: String { "Each message to the next bound destination in turn" }

  public func validate(bindingKey: String, arguments: FieldTable) throws(BrokerError) {
    if !arguments.isEmpty {
      throw .preconditionFailed("x-round-robin bindings take no arguments")
    }
  }

  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter {
    RoundRobinRouter()
  }
}

/// The routing index: the bound destinations, and whose turn it is.
final class RoundRobinRouter: ExchangeRouter {
  private var destinations: [Destination] = []
  private var next = 0

  func bindingAdded(_ binding: Binding) {
    if !self.destinations.contains(binding.destination) {
      self.destinations.append(binding.destination)
    }
  }

  func bindingRemoved(_ binding: Binding) {
    self.destinations.removeAll { $0 == binding.destination }
  }

  func route(_ input: RoutingInput, into routes: inout RouteSet) {
    guard !self.destinations.isEmpty else { return }
    if self.next >= self.destinations.count { self.next = 0 }
    routes.insert(self.destinations[self.next])
    self.next += 1
  }
}
