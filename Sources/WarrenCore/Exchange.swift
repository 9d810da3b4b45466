import AMQPProtocol

/// An exchange: a type's router plus the flags it was declared with.
public final class Exchange {
  /// Its name.
  public let name: String
  /// Its type.
  public let type: any ExchangeType
  /// Whether it survives a restart.
  public let durable: Bool
  /// Whether it is deleted when its last binding goes.
  public let autoDelete: Bool
  /// Whether clients may not publish to it directly.
  public let isInternal: Bool
  /// Its declare arguments.
  public let arguments: FieldTable
  /// The `alternate-exchange` a policy gives it (its own argument, when set, wins).
  public internal(set) var policyAlternateExchange: String?
  /// Its routing index.
  public let router: any ExchangeRouter
  /// The router, when it is the core's direct router (publishing takes a shortcut through it).
  let directRouter: DirectRouter?
  /// The bindings from this exchange.
  public internal(set) var outgoingBindings: [Binding] = []
  /// The bindings to this exchange (exchange-to-exchange).
  public internal(set) var incomingBindings: [Binding] = []
  /// Whether it was deleted (a channel's cached reference must look it up again).
  public internal(set) var isDeleted = false
  /// Messages published to this exchange by clients (not those reaching it through exchange-to-exchange bindings).
  public var messagesPublished = 0
  /// The routing pass that last added this exchange to a ``RouteSet``.
  @usableFromInline var routeEpoch: UInt64 = 0

  init(
    name: String, type: any ExchangeType, durable: Bool, autoDelete: Bool, isInternal: Bool, arguments: FieldTable,
    vhost: VirtualHost? = nil
  ) {
    self.name = name
    self.type = type
    self.durable = durable
    self.autoDelete = autoDelete
    self.isInternal = isInternal
    self.arguments = arguments
    self.router = type.makeRouter(
      context: ExchangeContext(exchangeName: name, arguments: arguments, durable: durable, vhost: vhost))
    self.directRouter = self.router as? DirectRouter
  }

  /// This exchange as a binding's destination.
  public var asDestination: Destination { .exchange(self) }
}
