// The seed's publisher: declares the direct exchange `topic` and the queue `topic1` (bound by its name), then
// publishes every line read from standard input.
//
//   swift run publisher [amqp://guest:guest@127.0.0.1:5672/]
import WarrenClient

let url = CommandLine.arguments.dropFirst().first ?? "amqp://guest:guest@127.0.0.1:5672/"
let connection = try await AMQPConnection.connect(to: url, name: "publisher")
try await connection.createExchange(name: "topic", type: "direct")
try await connection.createQueue(name: "topic1", exchange: "topic")
while let line = readLine() {
  try await connection.publish(line, to: "topic1", exchange: "topic")
}
try await connection.close()
