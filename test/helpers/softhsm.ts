// Moved to test-token.ts (the token kind is chosen by XKS_TEST_TOKEN); kept so that older imports still work.
export { createTestToken, createTestTokens, SOFTHSM_MODULE, type TestToken } from './test-token.js';
