// The app identity's roles on the staging workspace, the registry and the production workspace, which live in
// other resource groups (the registry perhaps in another subscription). Deployed by scripts/postprovision.sh, not by
// `azd provision`, so that `azd down` never counts those resource groups as its own; scripts/predown.sh removes
// these assignments again.

targetScope = 'subscription'

param principalId string
param stagingResourceGroup string
param stagingWorkspaceName string
param registrySubscriptionId string
param registryResourceGroup string
param registryName string
param productionSubscriptionId string
param productionResourceGroup string
param productionWorkspaceName string

module staging 'app/rbac.bicep' = {
  name: 'rbac-staging'
  scope: resourceGroup(stagingResourceGroup)
  params: {
    target: 'staging'
    principalId: principalId
    resourceName: stagingWorkspaceName
  }
}

module registry 'app/rbac.bicep' = {
  name: 'rbac-registry'
  scope: resourceGroup(registrySubscriptionId, registryResourceGroup)
  params: {
    target: 'registry'
    principalId: principalId
    resourceName: registryName
  }
}

module production 'app/rbac.bicep' = {
  name: 'rbac-production'
  scope: resourceGroup(productionSubscriptionId, productionResourceGroup)
  params: {
    target: 'production'
    principalId: principalId
    resourceName: productionWorkspaceName
  }
}
