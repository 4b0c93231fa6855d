// The consortium directory (institutions, centres): read once per session and shared.

import { ref } from 'vue'
import { api } from './api'
import type { Centre, Institution, Items } from './types'

export const institutions = ref<Institution[] | null>(null)
export const centres = ref<Centre[] | null>(null)

let institutionsLoading: Promise<Institution[]> | null = null
let centresLoading: Promise<Centre[]> | null = null

export function loadInstitutions(): Promise<Institution[]> {
  institutionsLoading ??= api
    .get<Items<Institution>>('/api/v1/institutions')
    .then((body) => (institutions.value = body.items))
    .catch((error: unknown) => {
      institutionsLoading = null
      throw error
    })
  return institutionsLoading
}

export function loadCentres(): Promise<Centre[]> {
  centresLoading ??= api
    .get<Items<Centre>>('/api/v1/centres')
    .then((body) => (centres.value = body.items))
    .catch((error: unknown) => {
      centresLoading = null
      throw error
    })
  return centresLoading
}

export function institutionById(id: string | null | undefined): Institution | undefined {
  return id ? institutions.value?.find((i) => i.id === id) : undefined
}

export function clearDirectory(): void {
  institutions.value = null
  centres.value = null
  institutionsLoading = null
  centresLoading = null
}
