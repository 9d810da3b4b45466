// Request/reply (RPC): a server consumes `rpc_queue` and answers each request to its reply-to queue with the
// request's correlation id; a client sends requests and matches the replies.
//
//   swift run rpc-example [amqp://guest:guest@127.0.0.1:5672/]
import AMQPProtocol
import WarrenClient

let url = CommandLine.arguments.dropFirst().first ?? "amqp://guest:guest@127.0.0.1:5672/"

// The server: upper-cases the request.
let serverConnection = try await AMQPConnection.connect(to: url, name: "rpc-server")
let serverChannel = try await serverConnection.openChannel()
try await serverChannel.declareQueue("rpc_queue", autoDelete: true)
let requests = try await serverChannel.consume(queue: "rpc_queue")
let server = Task {
  for try await request in requests {
    guard let replyTo = request.properties.replyTo else { continue }
    try await serverChannel.publish(
      request.text.uppercased(), routingKey: replyTo,
      properties: BasicProperties(correlationId: request.properties.correlationId))
    try await request.ack()
  }
}

/// The client: one exclusive reply queue, a correlation id per request.
func runClient(url: String) async throws {
  let connection = try await AMQPConnection.connect(to: url, name: "rpc-client")
  let channel = try await connection.openChannel()
  let replyQueue = try await channel.declareQueue("", exclusive: true).name
  let replies = try await channel.consume(queue: replyQueue, noAck: true)
  var iterator = replies.makeAsyncIterator()
  for (index, word) in ["hello", "warren", "rpc"].enumerated() {
    let correlationId = "request-\(index)"
    try await channel.publish(
      word, routingKey: "rpc_queue", properties: BasicProperties(correlationId: correlationId, replyTo: replyQueue))
    guard let reply = try await iterator.next() else { break }
    precondition(reply.properties.correlationId == correlationId, "a reply to another request")
    print("\(word) -> \(reply.text)")
  }
  try await connection.close()
}

try await runClient(url: url)
server.cancel()
try await serverConnection.close()
