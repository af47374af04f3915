// The function app's storage account: host leases and timers, the deployment package, the job queues, the
// promotion store's table, and the container Event Grid dead-letters to. No shared key: identities only.

param location string
param tags object
param name string
param deploymentContainerName string
param deadLetterContainerName string

@description('Queues that the functions use (promotion/triggers/jobs.py).')
param queueNames array = [
  'promotion-jobs'
  'promotion-jobs-poison'
]

@description('Tables of the promotion store (promotion/adapters/tables.py).')
param tableNames array = [
  'promotions'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }

  resource blobs 'blobServices' = {
    name: 'default'

    resource deployment 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }

    resource deadLetter 'containers' = {
      name: deadLetterContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'

    resource queues 'queues' = [
      for queue in queueNames: {
        name: queue
      }
    ]
  }

  resource tableService 'tableServices' = {
    name: 'default'

    resource tables 'tables' = [
      for table in tableNames: {
        name: table
      }
    ]
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deadLetterContainerName string = storage::blobs::deadLetter.name
