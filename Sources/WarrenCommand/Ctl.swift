import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import WarrenManagement

/// `warren ctl`: the management HTTP API from the command line (Warren's or RabbitMQ's: the same API).
/// Exit codes: 0 done, 1 the broker refused (its reason is printed), 3 the broker cannot be reached, 64 a usage error.
struct Ctl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Manage a running broker over its management API (list, purge, delete, policies, users, definitions).",
    discussion: """
      Talks to the management port (default 127.0.0.1 and WARREN_MANAGEMENT_PORT or 15672), as rabbitmqadmin does.
      Exit status: 0 done, 1 refused by the broker (its reason is printed), 3 broker unreachable, 64 usage error.
      """,
    subcommands: [
      CtlList.self, CtlPurge.self, CtlDelete.self, CtlCloseConnection.self, CtlSetPolicy.self, CtlClearPolicy.self,
      CtlAddUser.self, CtlSetPermissions.self, CtlSetLimit.self, CtlClearLimit.self, CtlExport.self, CtlImport.self,
    ])
}

/// Where and as whom `warren ctl` talks.
struct CtlOptions: ParsableArguments {
  @Option(
    help: "The management API's HOST:PORT or https://HOST:PORT (default 127.0.0.1 and WARREN_MANAGEMENT_PORT or 15672)."
  )
  var address: String?
  @OptionGroup var https: HTTPSFlags
  @Option(help: "A user with a management tag.") var user: String = "guest"
  @Option(help: "The user's password.") var password: String = "guest"
  @Option(help: "The virtual host.") var vhost: String = "/"

  var target: String {
    self.address ?? "127.0.0.1:\(ProcessInfo.processInfo.environment["WARREN_MANAGEMENT_PORT"] ?? "15672")"
  }

  /// Sends one request; answers the body of a 2xx, else prints the broker's reason and exits 1 (3 if unreachable).
  func call(_ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil, headers: [(String, String)] = [])
    async throws -> JSONValue?
  {
    let payload = body.map { ByteBuffer(bytes: $0.encoded()) }
    let status: HTTPResponseStatus
    let received: ByteBuffer
    do {
      (status, received) = try await httpRequest(
        address: self.target, method: method, path: "/api" + path, body: payload,
        credentials: (self.user, self.password), headers: headers, tls: self.https.options)
    } catch let error as ValidationError {
      printError("warren ctl: \(error)")
      throw ExitCode.validationFailure
    } catch {
      printError("warren ctl: cannot reach the management API at \(self.target): \(error)")
      throw ExitCode(3)
    }
    let json = JSONValue.decode(Data(received.readableBytesView))
    guard (200..<300).contains(status.code) else {
      let reason = json?["reason"]?.stringValue ?? String(buffer: received)
      printError("warren ctl: \(method) \(path): \(status.code) \(status.reasonPhrase): \(reason)")
      throw ExitCode(1)
    }
    return json
  }

  static func segment(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
      ?? text
  }

  var vhostSegment: String { Self.segment(self.vhost) }
}

struct CtlList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list",
    abstract: "List queues, exchanges, bindings, connections, channels, consumers, users, vhosts or policies.")

  static let columns: [String: [String]] = [
    "queues": ["vhost", "name", "type", "messages", "messages_ready", "messages_unacknowledged", "consumers"],
    "exchanges": ["vhost", "name", "type", "durable", "auto_delete", "internal"],
    "bindings": ["vhost", "source", "destination", "destination_type", "routing_key"],
    "connections": ["name", "user", "vhost", "state", "channels"],
    "channels": ["name", "user", "vhost", "prefetch_count", "messages_unacknowledged", "consumer_count"],
    "consumers": ["queue.name", "consumer_tag", "channel_details.name", "ack_required", "prefetch_count"],
    "users": ["name", "tags"],
    "vhosts": ["name", "messages"],
    "policies": ["vhost", "name", "pattern", "apply-to", "definition", "priority"],
  ]

  @OptionGroup var options: CtlOptions
  @Argument(help: "queues, exchanges, bindings, connections, channels, consumers, users, vhosts or policies.")
  var kind: String
  @Option(help: "table or json.") var format: String = "table"
  @Flag(help: "Every vhost, not only --vhost (for queues, exchanges, bindings, consumers, policies).")
  var allVhosts = false

  func validate() throws {
    guard Self.columns[self.kind] != nil else {
      throw ValidationError("cannot list '\(self.kind)': \(Self.columns.keys.sorted().joined(separator: ", "))")
    }
    guard self.format == "table" || self.format == "json" else { throw ValidationError("--format is table or json") }
  }

  func run() async throws {
    let scoped = ["queues", "exchanges", "bindings", "consumers", "policies"].contains(self.kind) && !self.allVhosts
    let path = "/\(self.kind)" + (scoped ? "/\(self.options.vhostSegment)" : "")
    let items = try await self.options.call(.GET, path)?.arrayValue ?? []
    if self.format == "json" {
      print(String(decoding: JSONValue.array(items).encoded(), as: UTF8.self))
      return
    }
    print(Self.table(items, columns: Self.columns[self.kind]!), terminator: "")
  }

  /// A plain text table, one row per item, columns as wide as their widest cell.
  static func table(_ items: [JSONValue], columns: [String]) -> String {
    let rows = items.map { item in columns.map { Self.text(item.value(atPath: $0)) } }
    let widths = columns.indices.map { i in ([columns[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
    func line(_ cells: [String]) -> String {
      zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
        .trimmingCharacters(in: .whitespaces) + "\n"
    }
    return line(columns) + rows.map(line).joined()
  }

  static func text(_ value: JSONValue?) -> String {
    switch value {
    case nil, .null?: return ""
    case .string(let s)?: return s
    case .int(let i)?: return String(i)
    case .double(let d)?: return String(d)
    case .bool(let b)?: return b ? "true" : "false"
    case .array(let items)?: return items.map { Self.text($0) }.joined(separator: ",")
    case let object?: return String(decoding: object.encoded(), as: UTF8.self)
    }
  }
}

struct CtlPurge: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "purge", abstract: "Purge a queue's ready messages.")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The queue.") var queue: String

  func run() async throws {
    _ = try await self.options.call(
      .DELETE, "/queues/\(self.options.vhostSegment)/\(CtlOptions.segment(self.queue))/contents")
    print("purged queue '\(self.queue)' in vhost '\(self.options.vhost)'")
  }
}

struct CtlDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Delete a queue, exchange, vhost, user or policy.")
  @OptionGroup var options: CtlOptions
  @Argument(help: "queue, exchange, vhost, user or policy.") var kind: String
  @Argument(help: "Its name.") var name: String

  func run() async throws {
    let name = CtlOptions.segment(self.name)
    let vhost = self.options.vhostSegment
    let path: String
    switch self.kind {
    case "queue": path = "/queues/\(vhost)/\(name)"
    case "exchange": path = "/exchanges/\(vhost)/\(name)"
    case "policy": path = "/policies/\(vhost)/\(name)"
    case "vhost": path = "/vhosts/\(name)"
    case "user": path = "/users/\(name)"
    default: throw ValidationError("cannot delete a '\(self.kind)': queue, exchange, vhost, user or policy")
    }
    _ = try await self.options.call(.DELETE, path)
    print("deleted \(self.kind) '\(self.name)'")
  }
}

struct CtlCloseConnection: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "close-connection", abstract: "Close a client connection (320 CONNECTION_FORCED) by its name.")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The connection's name, as `list connections` shows it.") var name: String
  @Option(help: "The reason the client is told.") var reason: String = "Closed via warren ctl"

  func run() async throws {
    _ = try await self.options.call(
      .DELETE, "/connections/\(CtlOptions.segment(self.name))", headers: [("X-Reason", self.reason)])
    print("closed connection '\(self.name)'")
  }
}

struct CtlSetPolicy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set-policy", abstract: "Add or replace a policy (it applies at once).")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The policy's name.") var name: String
  @Argument(help: "The regular expression of the names it applies to.") var pattern: String
  @Argument(help: #"Its definition, as JSON: '{"max-length": 1000}'."#) var definition: String
  @Option(help: "queues, exchanges or all.") var applyTo: String = "all"
  @Option(help: "The policy's priority.") var priority: Int = 0
  @Flag(help: "An operator policy.") var `operator` = false

  func run() async throws {
    guard let definition = JSONValue.decode(Data(self.definition.utf8)), definition.objectValue != nil else {
      throw ValidationError("the definition must be a JSON object")
    }
    let kind = self.operator ? "operator-policies" : "policies"
    _ = try await self.options.call(
      .PUT, "/\(kind)/\(self.options.vhostSegment)/\(CtlOptions.segment(self.name))",
      [
        "pattern": .string(self.pattern), "definition": definition, "apply-to": .string(self.applyTo),
        "priority": .int(Int64(self.priority)),
      ])
    print("set policy '\(self.name)' in vhost '\(self.options.vhost)'")
  }
}

struct CtlClearPolicy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "clear-policy", abstract: "Remove a policy.")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The policy's name.") var name: String
  @Flag(help: "An operator policy.") var `operator` = false

  func run() async throws {
    let kind = self.operator ? "operator-policies" : "policies"
    _ = try await self.options.call(.DELETE, "/\(kind)/\(self.options.vhostSegment)/\(CtlOptions.segment(self.name))")
    print("cleared policy '\(self.name)' in vhost '\(self.options.vhost)'")
  }
}

/// Which limit `set-limit` and `clear-limit` name: the --vhost's, or a user's with --user.
struct CtlLimitTarget: ParsableArguments {
  @Option(help: "A user's limit (max-connections, max-channels) instead of the vhost's.") var forUser: String?

  func path(_ options: CtlOptions, _ name: String) -> String {
    if let user = self.forUser { return "/user-limits/\(CtlOptions.segment(user))/\(CtlOptions.segment(name))" }
    return "/vhost-limits/\(options.vhostSegment)/\(CtlOptions.segment(name))"
  }

  func describe(_ options: CtlOptions) -> String { self.forUser.map { "user '\($0)'" } ?? "vhost '\(options.vhost)'" }
}

struct CtlSetLimit: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set-limit",
    abstract:
      "Set a vhost limit (max-connections, max-queues) or, with --for-user, a user limit (max-connections, max-channels)."
  )
  @OptionGroup var options: CtlOptions
  @OptionGroup var target: CtlLimitTarget
  @Argument(help: "The limit's name.") var name: String
  @Argument(help: "Its value; -1 for no limit.") var value: Int

  func run() async throws {
    _ = try await self.options.call(.PUT, self.target.path(self.options, self.name), ["value": .int(Int64(self.value))])
    print("set \(self.name) \(self.value) for \(self.target.describe(self.options))")
  }
}

struct CtlClearLimit: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "clear-limit", abstract: "Remove a vhost or user limit.")
  @OptionGroup var options: CtlOptions
  @OptionGroup var target: CtlLimitTarget
  @Argument(help: "The limit's name.") var name: String

  func run() async throws {
    _ = try await self.options.call(.DELETE, self.target.path(self.options, self.name))
    print("cleared \(self.name) for \(self.target.describe(self.options))")
  }
}

struct CtlAddUser: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "add-user", abstract: "Add a user, or change an existing user's password and tags.")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The user's name.") var name: String
  @Argument(help: "The user's password.") var newPassword: String
  @Option(help: "Comma-separated tags: administrator, monitoring, policymaker, management.") var tags: String = ""

  func run() async throws {
    _ = try await self.options.call(
      .PUT, "/users/\(CtlOptions.segment(self.name))",
      ["password": .string(self.newPassword), "tags": .string(self.tags)])
    print("user '\(self.name)' saved")
  }
}

struct CtlSetPermissions: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set-permissions", abstract: "Set a user's permissions in --vhost (regular expressions).")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The user.") var name: String
  @Option(help: "What the user may declare and delete.") var configure: String = ".*"
  @Option(help: "What the user may publish to and bind to.") var write: String = ".*"
  @Option(help: "What the user may consume from and bind from.") var read: String = ".*"

  func run() async throws {
    _ = try await self.options.call(
      .PUT, "/permissions/\(self.options.vhostSegment)/\(CtlOptions.segment(self.name))",
      ["configure": .string(self.configure), "write": .string(self.write), "read": .string(self.read)])
    print("permissions of '\(self.name)' in vhost '\(self.options.vhost)' set")
  }
}

struct CtlExport: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "export", abstract: "Print (or write to a file) the broker's definitions, in RabbitMQ's format.")
  @OptionGroup var options: CtlOptions
  @Option(help: "Write to this file instead of standard output.") var file: String?

  func run() async throws {
    let definitions = try await self.options.call(.GET, "/definitions") ?? .object([])
    let text = String(decoding: definitions.encoded(), as: UTF8.self) + "\n"
    if let file = self.file {
      do {
        try text.write(toFile: file, atomically: true, encoding: .utf8)
      } catch {
        printError("warren ctl: cannot write \(file): \(error)")
        throw ExitCode(1)
      }
      print("definitions written to \(file)")
    } else {
      print(text, terminator: "")
    }
  }
}

struct CtlImport: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "import", abstract: "Import definitions (RabbitMQ's definitions.json) from a file.")
  @OptionGroup var options: CtlOptions
  @Argument(help: "The definitions file.") var file: String

  func run() async throws {
    guard let data = FileManager.default.contents(atPath: self.file) else {
      printError("warren ctl: cannot read \(self.file)")
      throw ExitCode.validationFailure
    }
    guard let definitions = JSONValue.decode(data), definitions.objectValue != nil else {
      printError("warren ctl: \(self.file) is not a JSON object")
      throw ExitCode.validationFailure
    }
    _ = try await self.options.call(.POST, "/definitions", definitions)
    print("definitions imported from \(self.file)")
  }
}
