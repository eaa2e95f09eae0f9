// The daemon: flags, backend, servers, graceful stop on SIGTERM/SIGINT.
#ifndef CBT_AGENT_SERVER_AGENT_MAIN_H_
#define CBT_AGENT_SERVER_AGENT_MAIN_H_

namespace cbt::agent {

int AgentMain(int argc, char** argv);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_AGENT_MAIN_H_
