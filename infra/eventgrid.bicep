// The staging workspace's system topic and the subscription that sends its ModelRegistered events to the app.
// Deployed into the staging workspace's resource group by scripts/postdeploy.sh, after the code: Event Grid
// validates the webhook when the subscription is created, and the host creates the Event Grid extension's key only
// once the function is there. A workspace has at most one system topic: pass an existing one to reuse it.

@description('Name of the system topic: the existing one of the workspace, or the one to create.')
param systemTopicName string

@description('Reuse the workspace\'s existing system topic instead of creating it.')
param reuseSystemTopic bool = false

param stagingWorkspaceName string
param appResourceGroup string
param functionAppName string
param storageAccountName string
param deadLetterContainerName string

@description('The function that takes the events.')
param functionName string = 'on_model_registered'

@description('Name of the event subscription.')
param subscriptionName string = 'promote-models'

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: stagingWorkspaceName
}

resource functionApp 'Microsoft.Web/sites@2024-11-01' existing = {
  name: functionAppName
  scope: resourceGroup(appResourceGroup)
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
  scope: resourceGroup(appResourceGroup)
}

// The topic's own identity writes dead letters, as the storage account takes no shared key.
resource newTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (!reuseSystemTopic) {
  name: systemTopicName
  location: workspace.location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource existingTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = if (reuseSystemTopic) {
  name: systemTopicName
}

module deadLetterRole 'app/rbac.bicep' = {
  name: 'rbac-deadletter'
  scope: resourceGroup(appResourceGroup)
  params: {
    target: 'deadletter'
    principalId: reuseSystemTopic ? existingTopic!.identity.principalId : newTopic!.identity.principalId
    storageAccountName: storageAccountName
    deadLetterContainerName: deadLetterContainerName
  }
}

var systemKey = listKeys('${functionApp.id}/host/default', '2024-11-01').systemKeys.eventgrid_extension

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  name: '${systemTopicName}/${subscriptionName}'
  dependsOn: [
    newTopic
    deadLetterRole
  ]
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName=${functionName}&code=${systemKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.ModelRegistered'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output systemTopicName string = systemTopicName
output eventSubscriptionName string = subscriptionName
