import type { AccountChange } from '../accounts/state';

// The Firebase side of an admin change, through firebase-admin: what Firebase itself must
// know so that new tokens agree with Sekisho (refresh tokens revoked, the account disabled,
// the custom claims the next token carries). Used only when Firebase is configured.

export interface FirebaseTarget {
  /** How it is configured, for the messages: the emulator's address or the credentials. */
  via: string;
  projectId: string | undefined;
}

/**
 * Firebase is configured by the emulator's address or by Google credentials, else by the Auth
 * emulator of the local stack the command acts on (`npm start` with SEKISHO_AUTH_EMULATOR);
 * undefined = not configured. firebase-admin finds an emulator through
 * FIREBASE_AUTH_EMULATOR_HOST, so the local stack's is set there (this process only).
 */
export function firebaseTarget(
  env: NodeJS.ProcessEnv,
  projectOption: string | undefined,
  localEmulator?: { host: string; projectId: string | undefined },
): FirebaseTarget | undefined {
  const projectId = projectOption ?? (env.GOOGLE_CLOUD_PROJECT || env.GCLOUD_PROJECT || undefined);
  if (env.FIREBASE_AUTH_EMULATOR_HOST) {
    return { via: `the Auth emulator at ${env.FIREBASE_AUTH_EMULATOR_HOST}`, projectId };
  }
  if (env.GOOGLE_APPLICATION_CREDENTIALS) return { via: 'GOOGLE_APPLICATION_CREDENTIALS', projectId };
  if (localEmulator) {
    env.FIREBASE_AUTH_EMULATOR_HOST = localEmulator.host;
    return {
      via: `the local stack's Auth emulator at ${localEmulator.host}`,
      projectId: projectOption ?? localEmulator.projectId,
    };
  }
  return undefined;
}

export interface Claims {
  /** The claim that names the group (the definition's identity.groupClaim). */
  groupClaim: string | undefined;
  /** The customer id claim (identity.customerId.claim); undefined when it is the uid or unknown. */
  customerIdClaim: string | undefined;
}

/**
 * Applies the change in Firebase: revokeRefreshTokens, updateUser({disabled}), or the custom
 * claim merged into the user's existing ones. Resolves with what was done; rejects with
 * firebase-admin's error (a uid Firebase does not know: auth/user-not-found).
 */
export async function applyInFirebase(
  target: FirebaseTarget,
  change: Omit<AccountChange, 'version'>,
  claims: Claims,
): Promise<string> {
  const { initializeApp } = await import('firebase-admin/app');
  const { getAuth } = await import('firebase-admin/auth');
  const app = initializeApp(target.projectId ? { projectId: target.projectId } : {}, `sekisho-admin-${Date.now()}`);
  const auth = getAuth(app);
  try {
    switch (change.field) {
      case 'validAfter':
        await auth.revokeRefreshTokens(change.uid);
        return 'revoked its refresh tokens in Firebase';
      case 'disabled':
        await auth.updateUser(change.uid, { disabled: change.value !== null });
        return `${change.value === null ? 'enabled' : 'disabled'} the user in Firebase`;
      case 'group':
      case 'customerId': {
        const claim = change.field === 'group' ? claims.groupClaim : claims.customerIdClaim;
        if (claim === undefined) {
          throw new Error(
            `the ${change.field === 'group' ? 'group' : 'customer id'} claim's name is unknown: pass ${change.field === 'group' ? '--group-claim' : '--customer-id-claim'}`,
          );
        }
        const user = await auth.getUser(change.uid);
        const next: Record<string, unknown> = { ...user.customClaims };
        if (change.value === null) delete next[claim];
        else next[claim] = change.value;
        await auth.setCustomUserClaims(change.uid, next);
        return `set the custom claims in Firebase to ${JSON.stringify(next)} (the user's next token carries them)`;
      }
    }
  } finally {
    // Module-level state of firebase-admin: remove the app so nothing keeps the process alive.
    const { deleteApp } = await import('firebase-admin/app');
    await deleteApp(app);
  }
}
