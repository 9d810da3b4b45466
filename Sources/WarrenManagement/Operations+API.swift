import AMQPProtocol
import Foundation
import NIOCore
import NIOHTTP1
import WarrenConfig
import WarrenCore
import WarrenHTTP
import WarrenServer

/// Definitions, health checks, the aliveness test and the web UI's files.
extension ManagementAPI {
  func definitionsEndpoint(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws
    -> HTTPResponse
  {
    try caller.requireAdministrator()
    let only = path.count == 2 ? path[1] : nil
    if let only { try await self.requireVhost(only, caller) }
    guard path.count <= 2 else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      var running = try await self.amqp.withBroker { WarrenConfiguration(runningTopologyOf: $0) }
      if let only { running = running.restricted(toVhost: only) }
      let text = try running.rabbitMQDefinitionsJSON()
      return HTTPResponse(contentType: "application/json", body: text + "\n")
    case .POST:
      let text = String(buffer: request.body)
      var imported: WarrenConfiguration
      do {
        imported = try ConfigLoader.load(text: text.isEmpty ? "{}" : text, file: "definitions", registry: self.registry)
      } catch {
        throw ManagementError.badRequest(error.problems.map(\.message).joined(separator: "; "))
      }
      if let only { imported = imported.placed(inVhost: only) }
      let definitions = imported
      let result = try await self.change { inspection throws(BrokerError) in
        definitions.importDefinitions(into: inspection.broker)
      }
      await self.saveDefinitions()
      if !result.isEmpty { throw ManagementError.badRequest(result.joined(separator: "; ")) }
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  func health(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    guard path.count >= 3, path[1] == "checks" else { throw ManagementError.notFound }
    switch path[2] {
    case "alarms", "local-alarms":
      let alarms = try await self.amqp.inspect { $0.alarms }
      if !alarms.memory && !alarms.disk { return Self.json(.object([("status", "ok")])) }
      var list: [JSONValue] = []
      if alarms.memory { list.append(.object([("node", .string(self.node.name)), ("resource", "memory")])) }
      if alarms.disk { list.append(.object([("node", .string(self.node.name)), ("resource", "disk")])) }
      return Self.json(
        .object([
          ("status", "failed"), ("reason", "resource alarm(s) in effect in the cluster"), ("alarms", .array(list)),
        ]),
        status: .serviceUnavailable)
    case "port-listener" where path.count == 4:
      guard let port = Int(path[3]) else { throw ManagementError.badRequest("invalid port") }
      let ports = [self.node.amqpPort, self.node.managementPort]
      if ports.contains(port) { return Self.json(.object([("status", "ok"), ("port", .int(port))])) }
      return Self.json(
        .object([
          ("status", "failed"), ("reason", "No active listener"), ("missing", .int(port)),
          ("ports", .array(ports.sorted().map { .int($0) })),
        ]), status: .serviceUnavailable)
    case "protocol-listener" where path.count == 4:
      let protocols = ["amqp", "amqp091", "amqp0-9-1", "http", "management"]
      if protocols.contains(path[3]) { return Self.json(.object([("status", "ok"), ("protocol", .string(path[3]))])) }
      return Self.json(
        .object([("status", "failed"), ("reason", "No active listener"), ("missing", .string(path[3]))]),
        status: .serviceUnavailable)
    case "virtual-hosts":
      return Self.json(.object([("status", "ok")]))
    case "node-is-quorum-critical", "node-is-mirror-sync-critical", "certificate-expiration":
      return Self.json(.object([("status", "ok")]))
    default:
      throw ManagementError.notFound
    }
  }

  func aliveness(_ caller: Caller, vhost: String) async throws -> HTTPResponse {
    try await self.requireVhost(vhost, caller)
    if let failure = try await self.amqp.alivenessTest(vhost: vhost) {
      return Self.json(.object([("status", "failed"), ("reason", .string(failure))]), status: .serviceUnavailable)
    }
    return Self.json(.object([("status", "ok")]))
  }

  func asset(_ request: ManagementRequest) throws(ManagementError) -> HTTPResponse {
    guard request.method == .GET || request.method == .HEAD else { throw ManagementError.methodNotAllowed }
    let path = "/" + request.segments.joined(separator: "/")
    guard let asset = self.assets[path == "/" ? "/index.html" : path] else { throw ManagementError.notFound }
    return HTTPResponse(
      contentType: asset.contentType, bytes: asset.bytes,
      headers: [("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")])
  }
}
