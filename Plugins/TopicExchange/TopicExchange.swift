import AMQPProtocol
import WarrenCore

/// `topic`: routing keys and binding keys are words separated by dots; in a binding key `*` matches exactly one
/// word and `#` matches zero or more, as in RabbitMQ (empty words count: `a..b` has three).
///
/// Bindings are kept in a trie of words, so routing a message costs the length of its key and the bindings that
/// can match it, not the number of bindings.
public struct TopicExchangeType: ExchangeType {
  public init() {}
  public var name: String { "topic" }
  public var description: String { "AMQP topic exchange, as per the AMQP specification" }
  public var predeclaredExchanges: [String] { ["amq.topic"] }

  public func validate(bindingKey: String, arguments: FieldTable) throws(BrokerError) {
    if bindingKey.utf8.count > 255 {
      throw .preconditionFailed("binding key longer than 255 bytes")
    }
  }

  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter {
    TopicRouter()
  }
}

/// The words of a topic key: `""` has none, `"a..b"` has `a`, ``, `b` (RabbitMQ's split).
@inlinable
func topicWords(_ key: String) -> [Substring] {
  if key.isEmpty { return [] }
  return key.split(separator: ".", omittingEmptySubsequences: false)
}

/// The routing index of one topic exchange: a trie of binding-key words.
public final class TopicRouter: ExchangeRouter {
  final class Node {
    var children: [Substring: Node] = [:]
    var star: Node?
    var hash: Node?
    var bindings: [Binding] = []
    var destinations: [Destination] = []

    var isEmpty: Bool { children.isEmpty && star == nil && hash == nil && bindings.isEmpty }

    func rebuildDestinations() {
      var unique: [Destination] = []
      for b in self.bindings where !unique.contains(b.destination) { unique.append(b.destination) }
      self.destinations = unique
    }
  }

  private let root = Node()
  private var words: [Substring] = []  // reused: routing allocates nothing

  /// The number of distinct binding keys in the trie (for tests and metrics).
  public private(set) var keyCount = 0

  public init() {}

  public func bindingAdded(_ binding: Binding) {
    var node = self.root
    for word in topicWords(binding.routingKey) {
      switch word {
      case "*":
        if node.star == nil { node.star = Node() }
        node = node.star!
      case "#":
        if node.hash == nil { node.hash = Node() }
        node = node.hash!
      default:
        let key = Substring(String(word))  // own the bytes: the binding's string may go
        if let child = node.children[key] {
          node = child
        } else {
          let child = Node()
          node.children[key] = child
          node = child
        }
      }
    }
    if node.bindings.isEmpty { self.keyCount += 1 }
    node.bindings.append(binding)
    node.rebuildDestinations()
  }

  public func bindingRemoved(_ binding: Binding) {
    let words = topicWords(binding.routingKey)
    var path: [(Node, Substring)] = []
    var node = self.root
    for word in words {
      let next: Node?
      switch word {
      case "*": next = node.star
      case "#": next = node.hash
      default: next = node.children[word]
      }
      guard let next else { return }
      path.append((node, word))
      node = next
    }
    let before = node.bindings.count
    node.bindings.removeAll { $0 == binding }
    guard node.bindings.count != before else { return }
    if node.bindings.isEmpty { self.keyCount -= 1 }
    node.rebuildDestinations()
    // Prune nodes left empty, from the leaf up.
    var child = node
    for (parent, word) in path.reversed() {
      guard child.isEmpty else { break }
      switch word {
      case "*": parent.star = nil
      case "#": parent.hash = nil
      default: parent.children[word] = nil
      }
      child = parent
    }
  }

  public func route(_ input: RoutingInput, into routes: inout RouteSet) {
    self.words.removeAll(keepingCapacity: true)
    let key = input.routingKey
    if !key.isEmpty {
      var start = key.startIndex
      while let dot = key[start...].firstIndex(of: ".") {
        self.words.append(key[start..<dot])
        start = key.index(after: dot)
      }
      self.words.append(key[start...])
    }
    Self.match(self.root, self.words, 0, &routes)
  }

  private static func match(_ node: Node, _ words: [Substring], _ index: Int, _ routes: inout RouteSet) {
    if index == words.count {
      for d in node.destinations { routes.insert(d) }
    } else {
      if let child = node.children[words[index]] { match(child, words, index + 1, &routes) }
      if let star = node.star { match(star, words, index + 1, &routes) }
    }
    if let hash = node.hash {
      // `#` takes zero or more words.
      for next in index...words.count { match(hash, words, next, &routes) }
    }
  }
}
