import AMQPProtocol

/// A policy, as RabbitMQ's: a pattern over queue and exchange names in one vhost, a priority (the highest
/// matching policy applies), and a definition of keys (`message-ttl`, `max-length`, `dead-letter-exchange`, ...).
/// Queue arguments beat a policy; an operator policy caps what both give (the lower number wins).
public struct Policy {
  /// What a policy applies to.
  public enum ApplyTo: String, Sendable {
    case all
    case queues
    case exchanges
  }

  public var name: String
  public var pattern: String
  public var applyTo: ApplyTo
  public var priority: Int
  public var definition: FieldTable
  let regex: Regex<AnyRegexOutput>?

  /// A policy; nil regex (a pattern that does not compile) matches nothing.
  public init(name: String, pattern: String, applyTo: ApplyTo, priority: Int, definition: FieldTable) {
    self.name = name
    self.pattern = pattern
    self.applyTo = applyTo
    self.priority = priority
    self.definition = definition
    self.regex = try? Regex(pattern)
  }

  /// Everything that makes the policy what it is, to tell whether a reload changed it.
  public var summary: String {
    "\(self.name)|\(self.pattern)|\(self.applyTo.rawValue)|\(self.priority)|"
      + self.definition.entries.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
  }

  /// The definition keys a policy may set on queues, and the queue argument each stands for.
  public static let queueKeys: [String: String] = [
    "message-ttl": "x-message-ttl", "expires": "x-expires", "max-length": "x-max-length",
    "max-length-bytes": "x-max-length-bytes", "overflow": "x-overflow",
    "dead-letter-exchange": "x-dead-letter-exchange", "dead-letter-routing-key": "x-dead-letter-routing-key",
    "delivery-limit": "x-delivery-limit", "consumer-timeout": "x-consumer-timeout",
  ]
  /// The keys an operator policy may set: numbers, where the lower of it and the queue's own value applies.
  public static let operatorKeys: Set<String> = [
    "message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit", "consumer-timeout",
  ]

  func matches(_ name: String, queue: Bool) -> Bool {
    if self.applyTo == (queue ? .exchanges : .queues) { return false }
    guard let regex = self.regex else { return false }
    return (try? regex.firstMatch(in: name)) != nil
  }

  /// The policy that applies to a name among `policies`: the matching one with the highest priority (the first
  /// of equals, as given).
  public static func applying(_ policies: [Policy], to name: String, queue: Bool) -> Policy? {
    var best: Policy?
    for policy in policies where policy.matches(name, queue: queue) {
      if best == nil || policy.priority > best!.priority { best = policy }
    }
    return best
  }

  /// A queue's effective arguments: its own, then what the policy adds (arguments win), then the operator
  /// policy's caps (the lower number wins).
  static func effectiveArguments(_ arguments: FieldTable, policy: Policy?, operatorPolicy: Policy?) -> FieldTable {
    var effective = arguments
    if let policy {
      for entry in policy.definition {
        guard let argument = Self.queueKeys[entry.key], effective[argument] == nil else { continue }
        effective[argument] = entry.value
      }
    }
    if let operatorPolicy {
      for entry in operatorPolicy.definition where Self.operatorKeys.contains(entry.key) {
        guard let argument = Self.queueKeys[entry.key], let cap = entry.value.integerValue else { continue }
        if let own = effective[argument]?.integerValue, own <= cap { continue }
        effective[argument] = .int64(cap)
      }
    }
    if effective["x-dead-letter-routing-key"] != nil && effective["x-dead-letter-exchange"] == nil {
      effective["x-dead-letter-routing-key"] = nil  // a policy's routing key without an exchange does nothing
    }
    return effective
  }
}

extension VirtualHost {
  /// Replaces the vhost's policies and operator policies and applies them to every queue and exchange now (a
  /// queue over a new length limit drops its oldest, a new TTL expires what it must). Returns a line per queue or
  /// exchange whose policy changed.
  @discardableResult
  public func setPolicies(_ policies: [Policy], operatorPolicies: [Policy] = []) -> [String] {
    self.policies = policies
    self.operatorPolicies = operatorPolicies
    var changes: [String] = []
    for queue in self.queues.values.sorted(by: { $0.name < $1.name }) {
      let before = (queue.policy?.name, queue.operatorPolicy?.name)
      self.applyPolicies(to: queue)
      if before != (queue.policy?.name, queue.operatorPolicy?.name) {
        changes.append(
          "queue '\(queue.name)' in vhost '\(self.name)': policy \(queue.policy?.name ?? "none"), operator policy "
            + (queue.operatorPolicy?.name ?? "none"))
      }
    }
    for exchange in self.exchanges.values where exchange !== self.defaultExchange {
      let policy = Policy.applying(self.policies, to: exchange.name, queue: false)
      exchange.policyAlternateExchange = policy?.definition["alternate-exchange"]?.stringValue
    }
    self.bumpTopologyVersion()
    return changes
  }

  /// Computes a queue's options from its arguments and the policies that apply to it now.
  func applyPolicies(to queue: Queue) {
    guard !queue.isHolding else { return }  // the broker's own: its messages leave when due, whatever a policy says
    let policy = Policy.applying(self.policies, to: queue.name, queue: true)
    let operatorPolicy = Policy.applying(self.operatorPolicies, to: queue.name, queue: true)
    guard policy != nil || operatorPolicy != nil || queue.policy != nil || queue.operatorPolicy != nil else { return }
    let effective = Policy.effectiveArguments(queue.arguments, policy: policy, operatorPolicy: operatorPolicy)
    let options: QueueOptions
    do throws(BrokerError) {
      options = try QueueOptions(arguments: effective, queue: queue.name, vhost: self.name)
    } catch {
      return  // policy values are checked when policies are loaded; a combination that does not parse is left out
    }
    queue.policyApplied(options, policy: policy, operatorPolicy: operatorPolicy)
  }
}
