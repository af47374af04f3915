// Every role assignment of the deployment, in one place. Deployed once per scope it touches, with `target` naming
// which of them belong there: the app's resource group (by azd provision), the staging and production workspaces
// and the registry (by the postprovision hook, as a separate deployment that `azd down` never sees, so that it
// cannot delete their resource groups), and the dead-letter container (by the postdeploy hook, for the system
// topic's identity). The README's permission tables list the same rows; tests/infra checks that they agree.

import { roles } from 'roles.bicep'

@allowed([
  'app'
  'staging'
  'registry'
  'production'
  'deadletter'
])
param target string

@description('Principal id of the identity that receives the roles.')
param principalId string

@description('Name of the workspace (staging, production) or registry (registry) that the roles apply to.')
param resourceName string = ''

param storageAccountName string = ''
param deadLetterContainerName string = ''
param eventsTopicName string = ''
param applicationInsightsName string = ''

@description('Application Insights refuses instrumentation keys: telemetry is signed with the identity.')
param appInsightsLocalAuthDisabled bool = true

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = if (target == 'staging' || target == 'production') {
  name: resourceName
}

resource registry 'Microsoft.MachineLearningServices/registries@2024-10-01' existing = if (target == 'registry') {
  name: resourceName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (target == 'app' || target == 'deadletter') {
  name: storageAccountName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = if (target == 'deadletter') {
  name: '${storageAccountName}/default/${deadLetterContainerName}'
}

resource eventsTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = if (target == 'app' && !empty(eventsTopicName)) {
  name: eventsTopicName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = if (target == 'app' && appInsightsLocalAuthDisabled) {
  name: applicationInsightsName
}

resource stagingDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'staging') {
  name: guid(workspace.id, principalId, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    description: 'staging workspace: read and list model versions, publish them to the registry'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist) // AzureML Data Scientist
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource registryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'registry') {
  name: guid(registry.id, principalId, roles.azureMLRegistryUser)
  scope: registry
  properties: {
    description: 'registry: read and list registry models, receive the copy, set its tags'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLRegistryUser) // AzureML Registry User
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource productionDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'production') {
  name: guid(workspace.id, principalId, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    description: 'production workspace: create endpoints and deployments, move traffic, read deployment logs'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist) // AzureML Data Scientist
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'app') {
  name: guid(storage.id, principalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    description: 'function app storage account: the promotion store'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor) // Storage Table Data Contributor
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'app') {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    description: 'function app storage account: the job queues'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor) // Storage Queue Data Contributor
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'app') {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    description: 'function app storage account: host leases and timers, the deployment package'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner) // Storage Blob Data Owner
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource eventsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'app' && !empty(eventsTopicName)) {
  name: guid(eventsTopic.id, principalId, roles.eventGridDataSender)
  scope: eventsTopic
  properties: {
    description: 'lifecycle events topic: publish lifecycle events without a key'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender) // EventGrid Data Sender
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'app' && appInsightsLocalAuthDisabled) {
  name: guid(applicationInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    description: 'Application Insights: send telemetry with the identity, as local auth is off'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher) // Monitoring Metrics Publisher
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target == 'deadletter') {
  name: guid(deadLetterContainer.id, principalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    description: 'dead-letter container: the system topic writes events it gives up on, with its own identity'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor) // Storage Blob Data Contributor
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
