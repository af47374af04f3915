// The function app on Flex Consumption, its user-assigned identity's settings, and platform authentication.

param location string
param tags object
param name string
param planName string
param identityId string
param storageBlobEndpoint string
param deploymentContainerName string

@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string

param instanceMemoryMB int
param maximumInstanceCount int

@description('Every app setting, built in main.bicep.')
param appSettings object

@description('Client id of the Entra app registration for sign-in; empty: every request but the excluded paths is refused.')
param authClientId string

@description('Tenant of the app registration.')
param authTenantId string

@description('Paths platform authentication lets through without a token. Event Grid calls its webhook with the system key and no token; the console page shows no data and sends the browser to sign in when the API answers 401.')
param excludedPaths array = [
  '/runtime/webhooks/eventgrid'
  '/api/console'
  '/api/console/app.js'
  '/api/console/app.css'
]

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-11-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: appSettings
  }

  // Microsoft Entra sign-in, required everywhere but the excluded paths; API clients get 401, never a redirect.
  // Without a client id the same answer holds: no identity provider is configured, so nothing can sign in, and
  // every route outside the excluded paths is refused by the platform (the app would answer 401 as well).
  resource auth 'config' = {
    name: 'authsettingsV2'
    properties: {
      platform: {
        enabled: true
      }
      globalValidation: {
        requireAuthentication: true
        unauthenticatedClientAction: 'Return401'
        excludedPaths: excludedPaths
      }
      identityProviders: {
        azureActiveDirectory: {
          enabled: !empty(authClientId)
          registration: {
            clientId: authClientId
            openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
          }
          validation: {
            allowedAudiences: empty(authClientId) ? [] : [
              'api://${authClientId}'
              authClientId
            ]
          }
        }
      }
    }
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
