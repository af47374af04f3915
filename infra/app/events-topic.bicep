// The lifecycle events topic. It takes CloudEvents 1.0, as the app publishes them: a topic in the Event Grid schema
// (the CLI's default) refuses every CloudEvents publish with 400. Keys are off: the app signs with its identity.

param location string
param tags object
param name string

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
