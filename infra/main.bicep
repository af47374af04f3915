// `azd up` provisions this: the function app and everything it owns, in one new resource group. The staging
// workspace, the registry and the production workspace are referenced, never created, and nothing of this
// deployment touches their resource groups: `azd down` deletes every resource group a deployment wrote to
// (Azure/azure-dev#2916). Their role assignments are a separate deployment (grants.bicep, by the postprovision
// hook) and the Event Grid subscription another one (eventgrid.bicep, by the postdeploy hook); the predown hook
// removes both.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Region of the function app and its resources.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group of the app; default rg-ENVIRONMENT.')
param resourceGroupName string = ''

@description('Resource group of the staging workspace (in this subscription).')
param stagingResourceGroup string
@description('The staging workspace: its ModelRegistered events start promotions.')
param stagingWorkspaceName string

@description('The shared Azure ML registry.')
param registryName string
@description('The registry\'s primary region, such as westeurope.')
param registryLocation string
@description('Resource group of the registry.')
param registryResourceGroup string
@description('Subscription of the registry; empty: this one.')
param registrySubscriptionId string = ''

@description('Resource group of the production workspace.')
param productionResourceGroup string
@description('The production workspace, where approved models are deployed.')
param productionWorkspaceName string
@description('Subscription of the production workspace; empty: this one.')
param productionSubscriptionId string = ''

@description('Python version of the function app: one that both Flex Consumption and the app support.')
@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Memory of each instance, in MB (Flex Consumption: 512, 2048 or 4096).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Client id of the Entra app registration for sign-in. Empty: no one can sign in, and every route but the excluded paths answers 401.')
param authClientId string = ''

@description('Create the lifecycle events topic (CloudEvents 1.0) and let the app publish to it.')
param createEventsTopic bool = false

@description('Application Insights accepts only Entra-signed telemetry (the identity gets Monitoring Metrics Publisher).')
param appInsightsLocalAuthDisabled bool = true

@description('The app\'s public origin, such as https://promo.contoso.com, for a custom domain. Empty: https:// and the app\'s host name.')
param publicOrigin string = ''

@description('NCRONTAB schedule of the registry reconcile.')
param reconcileSchedule string = '0 0 * * * *'

@description('NCRONTAB schedule of drift detection.')
param driftSchedule string = '0 0 * * * *'

@description('Days decisions are kept (more than 1).')
@minValue(2)
param decisionsRetentionDays int = 7

@description('Days published lifecycle events are kept.')
@minValue(1)
param eventsRetentionDays int = 30

@description('Minutes after which a registry copy still running counts as failed.')
@minValue(1)
param copyTimeoutMinutes int = 120

var tags = {
  'azd-env-name': environmentName
}
var token = toLower(uniqueString(subscription().id, environmentName, location))
var functionAppName = 'func-promotion-${token}'
var deploymentContainerName = 'app-package-${take(token, 7)}'
var deadLetterContainerName = 'promotion-deadletter'
var registrySubscription = empty(registrySubscriptionId) ? subscription().subscriptionId : registrySubscriptionId
var productionSubscription = empty(productionSubscriptionId) ? subscription().subscriptionId : productionSubscriptionId

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'id-promotion-${token}'
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'stpromo${token}'
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-promotion-${token}'
    applicationInsightsName: 'appi-promotion-${token}'
    disableLocalAuth: appInsightsLocalAuthDisabled
  }
}

module eventsTopic 'app/events-topic.bicep' = if (createEventsTopic) {
  name: 'events-topic'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'evgt-promotion-${token}'
  }
}

// Every setting the app, the Functions host and azure-identity read (see the README's Configuration). No secret:
// storage, Application Insights and the events topic are reached with the managed identity.
var appSettings = {
  AZURE_CLIENT_ID: identity.outputs.clientId
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: appInsightsLocalAuthDisabled
    ? 'ClientId=${identity.outputs.clientId};Authorization=AAD'
    : ''
  PROMOTION_BACKEND: 'azureml'
  PROMOTION_STATE_STORE: 'tables'
  PROMOTION_POLICY_FILE: 'promotion-policy.json'
  AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  STAGING_RESOURCE_GROUP: stagingResourceGroup
  STAGING_WORKSPACE: stagingWorkspaceName
  REGISTRY_NAME: registryName
  REGISTRY_LOCATION: registryLocation
  REGISTRY_RESOURCE_GROUP: registryResourceGroup
  REGISTRY_SUBSCRIPTION_ID: registrySubscription
  PRODUCTION_SUBSCRIPTION_ID: productionSubscription
  PRODUCTION_RESOURCE_GROUP: productionResourceGroup
  PRODUCTION_WORKSPACE: productionWorkspaceName
  PROMOTION_COPY_TIMEOUT_MINUTES: string(copyTimeoutMinutes)
  PROMOTION_RECONCILE_SCHEDULE: reconcileSchedule
  PROMOTION_DRIFT_SCHEDULE: driftSchedule
  PROMOTION_DECISIONS_RETENTION_DAYS: string(decisionsRetentionDays)
  PROMOTION_PUBLIC_ORIGIN: publicOrigin
  PROMOTION_EVENTS_ENDPOINT: createEventsTopic ? eventsTopic.outputs.endpoint : ''
  PROMOTION_EVENTS_SOURCE: '/sites/${functionAppName}'
  PROMOTION_EVENTS_RETENTION_DAYS: string(eventsRetentionDays)
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    location: location
    tags: tags
    name: functionAppName
    planName: 'plan-promotion-${token}'
    identityId: identity.outputs.id
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    appSettings: appSettings
    authClientId: authClientId
    authTenantId: tenant().tenantId
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac-app'
  scope: rg
  params: {
    target: 'app'
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    eventsTopicName: createEventsTopic ? eventsTopic.outputs.name : ''
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appInsightsLocalAuthDisabled: appInsightsLocalAuthDisabled
  }
}

// Read by the hooks (azd puts outputs in the environment) and by `azd deploy`.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_ID string = functionApp.outputs.id
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output DEAD_LETTER_CONTAINER string = deadLetterContainerName
output STAGING_RESOURCE_GROUP string = stagingResourceGroup
output STAGING_WORKSPACE string = stagingWorkspaceName
output REGISTRY_NAME string = registryName
output REGISTRY_RESOURCE_GROUP string = registryResourceGroup
output REGISTRY_SUBSCRIPTION_ID string = registrySubscription
output PRODUCTION_RESOURCE_GROUP string = productionResourceGroup
output PRODUCTION_WORKSPACE string = productionWorkspaceName
output PRODUCTION_SUBSCRIPTION_ID string = productionSubscription
