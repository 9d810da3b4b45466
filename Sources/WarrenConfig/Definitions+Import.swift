import WarrenCore

extension WarrenConfiguration {
  /// Only what belongs to one vhost (RabbitMQ's `/api/definitions/{vhost}`).
  public func restricted(toVhost vhost: String) -> WarrenConfiguration {
    var only = WarrenConfiguration()
    only.vhosts = []
    only.users = []
    only.permissions = []
    only.policies = self.policies.filter { $0.vhost == vhost }
    only.operatorPolicies = self.operatorPolicies.filter { $0.vhost == vhost }
    only.exchanges = self.exchanges.filter { $0.vhost == vhost }
    only.queues = self.queues.filter { $0.vhost == vhost }
    only.bindings = self.bindings.filter { $0.vhost == vhost }
    return only
  }

  /// The vhost-scoped definitions moved into `vhost` (an import into `/api/definitions/{vhost}`).
  public func placed(inVhost vhost: String) -> WarrenConfiguration {
    var placed = self
    placed.vhosts = [vhost]
    placed.users = []
    placed.permissions = []
    for i in placed.policies.indices { placed.policies[i].vhost = vhost }
    for i in placed.operatorPolicies.indices { placed.operatorPolicies[i].vhost = vhost }
    for i in placed.exchanges.indices { placed.exchanges[i].vhost = vhost }
    for i in placed.queues.indices { placed.queues[i].vhost = vhost }
    for i in placed.bindings.indices { placed.bindings[i].vhost = vhost }
    return placed
  }

  /// Imports definitions as RabbitMQ's `POST /api/definitions` does: vhosts added, users and permissions set
  /// (passwords and tags replaced), policies added or replaced by name, exchanges, queues and bindings declared.
  /// Returns the declarations refused (an inequivalent queue, say); the rest is applied.
  public func importDefinitions(into broker: Broker) -> [String] {
    var problems: [String] = []
    for name in self.vhosts { broker.addVirtualHost(name) }
    for user in self.users { broker.users[user.name] = user.user }
    for grant in self.permissions {
      broker.addVirtualHost(grant.vhost)
      broker.permissions[grant.user, default: [:]][grant.vhost] = grant.permission
    }
    _ = self.applyLimits(to: broker)
    for name in Set(self.policies.map(\.vhost) + self.operatorPolicies.map(\.vhost)) {
      let vhost = broker.addVirtualHost(name)
      // Added, or replacing the one of the same name; a definition with a problem is reported and left out.
      func merged(_ current: [Policy], _ definitions: [PolicyDefinition], operator isOperator: Bool) -> [Policy] {
        var policies = current
        for definition in definitions where definition.vhost == name {
          if let problem = definition.definitionProblem(operator: isOperator) {
            problems.append(problem)
            continue
          }
          policies.removeAll { $0.name == definition.name }
          policies.append(definition.policy)
        }
        return policies
      }
      let policies = merged(vhost.policies, self.policies, operator: false)
      let operatorPolicies = merged(vhost.operatorPolicies, self.operatorPolicies, operator: true)
      vhost.setPolicies(policies, operatorPolicies: operatorPolicies)
    }
    for exchange in self.exchanges {
      do throws(BrokerError) { try exchange.declare(on: broker) } catch { problems.append(error.replyText) }
    }
    for queue in self.queues {
      do throws(BrokerError) { try queue.declare(on: broker) } catch { problems.append(error.replyText) }
    }
    for binding in self.bindings {
      do throws(BrokerError) { _ = try binding.declare(on: broker) } catch { problems.append(error.replyText) }
    }
    return problems
  }
}
