import NIOHTTP1
import WarrenCore
import WarrenHTTP
import WarrenServer

/// RabbitMQ's vhost limits (`max-connections`, `max-queues`) and user limits (`max-connections`, `max-channels`):
/// `/api/vhost-limits[/VHOST[/NAME]]` and `/api/user-limits[/USER[/NAME]]`.
extension ManagementAPI {
  func limits(_ request: ManagementRequest, _ caller: Caller, _ path: [String], ofUsers: Bool) async throws
    -> HTTPResponse
  {
    let names = ofUsers ? ["max-connections", "max-channels"] : ["max-connections", "max-queues"]
    let owner = ofUsers ? "user" : "vhost"
    switch (request.method, path.count) {
    case (.GET, 1), (.GET, 2):
      if ofUsers { try caller.requireAdministrator() }
      let visible = ofUsers ? [] : try await self.visibleVhosts(caller)
      let rows = try await self.amqp.withBroker { broker -> [(String, [(name: String, value: Int)])] in
        let all =
          ofUsers
          ? broker.userLimits.map { ($0.key, $0.value.named) }
          : broker.vhosts.values.filter { visible.contains($0.name) }.map { ($0.name, $0.limits.named) }
        return all.filter { !$0.1.isEmpty && (path.count == 1 || $0.0 == path[1]) }.sorted { $0.0 < $1.0 }
      }
      return Self.json(
        .array(
          rows.map { name, values in
            .object([(owner, .string(name)), ("value", .object(values.map { ($0.name, .int(Int64($0.value))) }))])
          }))
    case (.PUT, 3), (.DELETE, 3):
      try caller.requireAdministrator()
      let (target, name) = (path[1], path[2])
      var value: Int?
      if request.method == .PUT {
        let body = try request.jsonObject()
        guard names.contains(name) else {
          throw ManagementError.badRequest(
            "Validation failed\n\nUnrecognised terms [{<<\"\(name)\">>,\(body["value"].map { String(decoding: $0.encoded(), as: UTF8.self) } ?? "")}] in limits\n"
          )
        }
        guard let number = body["value"]?.intValue else {
          let shown = body["value"]?.stringValue.map { "<<\"\($0)\">>" } ?? "undefined"
          throw ManagementError.badRequest("Validation failed\n\n\(name) should be a number, actually was \(shown)\n")
        }
        value = Int(clamping: number)
      }
      let newValue = value
      let found = try await self.amqp.withBroker { broker -> Bool in
        if ofUsers {
          guard broker.users[target] != nil else { return false }
          var limits = broker.userLimits[target] ?? UserLimits()
          if name == "max-connections" { limits.maxConnections = newValue } else { limits.maxChannels = newValue }
          broker.userLimits[target] = limits.isEmpty ? nil : limits
        } else {
          guard let vhost = broker.vhosts[target] else { return false }
          if name == "max-connections" {
            vhost.limits.maxConnections = newValue
          } else {
            vhost.limits.maxQueues = newValue
          }
        }
        return true
      }
      guard found else { throw ManagementError.notFound }
      await self.saveDefinitions()
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }
}
